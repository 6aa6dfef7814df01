"""ltx.stages: a distilling stage takes its teacher from `config.teacher.workdir`."""

import os

import pytest

from helpers import tiny_config
from ltx import stages, workdirs


@pytest.mark.slow
def test_ride_distils_from_a_finished_run_in_teacher_workdir(tmp_path):
    teacher = str(tmp_path / "teacher")
    stages.train(tiny_config("digits_lt_balpoe", epochs=1), teacher)
    config = tiny_config("digits_lt_ride", epochs=1, arg="distill=2")
    with pytest.raises(ValueError, match="set config.teacher.workdir"):
        stages.train(config, str(tmp_path / "no_teacher"))
    assert not os.path.isdir(tmp_path / "no_teacher" / "experts" / "checkpoints")
    config.teacher.workdir = teacher
    final = stages.train(config, str(tmp_path / "student"))
    assert set(final["stages"]) == {"experts", "router"}
    experts = workdirs.load_config(str(tmp_path / "student" / "experts"))
    assert experts.method.distill and experts.teacher.workdir == teacher
