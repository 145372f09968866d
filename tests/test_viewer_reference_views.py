"""The viewer panel of a several-photo run: one frustum per reference photo, each where its camera stands, all of
them taken over as nerfstudio's training cameras."""

from types import SimpleNamespace

import numpy as np
import pytest

from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_views_folder
from single_image_nerf.viewer import TrainingViewerPanel
from test_viewer import server  # noqa: F401  (the fixture: a real viser server)
from tiny_training import tiny_config


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    data = write_reference_views_folder(get_known_object("box"), root / "data", [0.0, 90.0, 180.0],
                                        ReferenceView(size=16))
    config = tiny_config(data, root / "outputs", steps=2, image_size=16)
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_every_reference_camera_is_drawn(pipeline, server):  # noqa: F811
    panel = TrainingViewerPanel(server, pipeline, total_steps=2)
    views = pipeline.datamanager.train_dataparser_outputs.metadata["reference_views"]
    assert len(panel.reference_handles) == 3 and panel.reference_handle is panel.reference_handles[0]
    for handle, view in zip(panel.reference_handles, views):
        position = view["camera"].camera_to_worlds[0, :, 3].numpy()
        assert np.allclose(handle.position, position * 10.0, atol=1e-4)
    assert np.allclose(panel.reference_handles[2].position, [-25.0, 0.0, 0.0], atol=1e-3)  # the back photo
    removed = []
    viewer = SimpleNamespace(camera_handles={0: SimpleNamespace(remove=lambda: removed.append(0))},
                             current_camera_idx=None)
    panel.adopt_training_cameras(viewer)
    assert removed == [0] and list(viewer.camera_handles) == [0, 1, 2]
    assert viewer.camera_handles[1] is panel.reference_handles[1]
