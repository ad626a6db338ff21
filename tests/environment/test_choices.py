"""environment.choices: the installer accepts every build choice, in the positions saved enums hold."""
import pytest

from modalseg.engine.vocabulary import keys
from modalseg.environment.choices import ACTIONS, BUILDS
from modalseg.environment.plan import make_plan
from modalseg.environment.probes import GpuInfo

NVIDIA = GpuInfo(True, ["NVIDIA RTX A2000"], "550.54", ["fake probe"])


def test_saved_positions_keep_their_keys():
    assert keys(ACTIONS)[:3] == ("install", "remove", "plan")
    assert keys(BUILDS)[:3] == ("auto", "cpu", "cuda")


@pytest.mark.parametrize("build", keys(BUILDS))
def test_every_build_is_accepted_and_decides_the_builds(build):
    plan = make_plan("inference", only=["onnxruntime"], build=build, gpu=NVIDIA, lookup=lambda name: None,
                     importable=lambda module: False, platform="linux", machine="x86_64")
    assert plan.use_cuda == (build != "cpu")  # 'auto' takes CUDA builds with an NVIDIA GPU present
    assert plan.requirements == [("onnxruntime-gpu" if plan.use_cuda else "onnxruntime") + "==1.20.1"]


def test_an_unknown_build_is_refused():
    with pytest.raises(ValueError, match="build must be one of auto, cpu, cuda"):
        make_plan("inference", build="tpu", gpu=NVIDIA)
