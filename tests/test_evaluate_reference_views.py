"""sin-evaluate on a several-photo run: no held-out view at a reference photo's azimuth (the default ring of
22.5 + 45 k degrees misses 0/90/180/270; another count that meets a photo's azimuth loses that view)."""

import pytest

from single_image_nerf.errors import UserInputError
from single_image_nerf.known_objects import ReferenceView, get_known_object, reference_cameras
from single_image_nerf.scripts import evaluate as E
from test_evaluate import _config, _pipeline


def several_photos(pipeline, azimuths):
    outputs = pipeline.datamanager.train_dataparser_outputs
    outputs.metadata["reference_views"] = [{"azimuth": azimuth} for azimuth in azimuths]
    return pipeline


def held_out_offsets(report):
    return sorted(round(view["azimuth_offset"], 1) for view in report["views"] if view["name"] != "reference")


def test_held_out_views_at_a_reference_azimuth_are_left_out():
    box = get_known_object("box")
    ring = E.evaluate_pipeline(several_photos(_pipeline(box, size=16), [0.0, 90.0, 180.0, 270.0]),
                               _config(known_object="box", num_views=8, geometry_views=0, resolution=16))
    assert held_out_offsets(ring) == [-157.5, -112.5, -67.5, -22.5, 22.5, 67.5, 112.5, 157.5]  # none at a photo
    assert ring["reference_azimuths"] == [0.0, 90.0, 180.0, 270.0]
    # Two held-out views (at 90 and 270) would be photographed sides: only the photo at 90 is one here.
    two = E.evaluate_pipeline(several_photos(_pipeline(box, size=16), [0.0, 90.0]),
                              _config(known_object="box", num_views=2, geometry_views=0, resolution=16))
    assert held_out_offsets(two) == [-90.0]
    one_photo = E.evaluate_pipeline(_pipeline(box, size=16), _config(known_object="box", num_views=2, geometry_views=0, resolution=16))
    assert held_out_offsets(one_photo) == [-90.0, 90.0] and one_photo["reference_azimuths"] == []
    with pytest.raises(UserInputError, match="every held-out view lies at a reference photo's azimuth"):
        E.evaluate_pipeline(several_photos(_pipeline(box, size=16), [0.0, 90.0, 270.0]),
                            _config(known_object="box", num_views=2, geometry_views=0, resolution=16))


def test_away_from_measures_wrapped_azimuth():
    cameras = E.held_out_cameras(reference_cameras(ReferenceView(size=8)), 4, None, None)  # at 45, 135, 225, 315
    assert E.away_from(cameras, []) == [0, 1, 2, 3]
    assert E.away_from(cameras, [-45.0]) == [0, 1, 2]  # 315 is -45
    assert E.away_from(cameras, [44.5]) == [1, 2, 3] and E.away_from(cameras, [43.0]) == [0, 1, 2, 3]
