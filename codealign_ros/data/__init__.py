"""Datasets: the generated mini-V2X world, OPV2V / DAIR-V2X readers and writers, rosbags."""
