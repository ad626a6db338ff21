"""The dependency installer's choice lists, as ``(key, label)`` pairs in saved order: the install
algorithm's Processing enums and the dependencies dialog are built from them (an enum stores the
position, so new choices go at the end). The profiles are ``pins.PROFILES`` / ``PROFILE_LABELS``."""
from ..engine.vocabulary import Choices

ACTIONS: Choices = (
    ("install", "Install or update"),
    ("remove", "Remove the packages ModalSeg installed"),
    ("plan", "Only show what would be installed, and the pip command"),
)
BUILDS: Choices = (
    ("auto", "Auto (CUDA builds when an NVIDIA GPU and driver are present, else CPU)"),
    ("cpu", "CPU builds"),
    ("cuda", "CUDA builds (NVIDIA GPU)"),
)
