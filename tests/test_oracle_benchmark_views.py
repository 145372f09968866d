"""benchmarks/oracle_recovery.py with several reference photos (`--views`) and no prior (`--guidance none`) at tiny
sizes: the run trains on the several-photo folder the benchmark writes, and no held-out view sits at a photo's
azimuth."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_views_and_no_guidance_score_only_unphotographed_sides(tmp_path):
    report = tmp_path / "report.json"
    arguments = ["--object", "box", "--steps", "10", "--size", "24", "--novel-resolution", "16", "--num-views", "2",
                 "--eval-resolution", "16", "--threads", "1", "--device", "cpu", "--supersample", "1",
                 "--views", "0", "90", "--guidance", "none", "--json", str(report)]
    environment = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oracle_recovery.py"), *arguments],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "guidance none, reference photos at 0 90" in result.stdout
    scored = json.loads(report.read_text())["by_supersample"]["1"]
    held_out = [view["azimuth_offset"] for view in scored["views"] if view["name"] != "reference"]
    assert [round(offset) for offset in held_out] == [-90]  # the held-out view at +90 is the second photo's side
    assert scored["reference_azimuths"] == [0.0, 90.0]
    written = next(Path(tmp_path).glob("oracle-*/data/meta.json"))
    assert [view["azimuth_deg"] for view in json.loads(written.read_text())["views"]] == [0.0, 90.0]
