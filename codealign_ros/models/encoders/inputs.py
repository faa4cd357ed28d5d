"""Encoder inputs: moved to `codealign_ros.models.inputs` (torch-free); kept for imports."""
from codealign_ros.models.inputs import *  # noqa: F401,F403
from codealign_ros.models.inputs import __all__  # noqa: F401
