"""ament_python package definition of codealign_ros (built by colcon)."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "codealign_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", [f for f in glob("config/*") if Path(f).is_file()]),
        ("share/" + PACKAGE + "/config/schema", glob("config/schema/*.json")),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
        # the shipped weights and their cards (not the onnx/ export cache nor checkpoints/):
        # a relative model_dir resolves against share/codealign_ros (codealign_ros.config.share)
        ("share/" + PACKAGE + "/models/mini", sorted(glob("models/mini/*.pt")
                                                     + glob("models/mini/*.md"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="CodeAlign ROS maintainers",
    maintainer_email="maintainers@users.noreply.github.com",
    description="CodeAlign V2X cooperative perception as ROS 2 nodes.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "codealign = codealign_ros.cli:main",
            "codemap_source = codealign_ros.nodes.codemap_source:main",
            "codemap_monitor = codealign_ros.nodes.codemap_monitor:main",
            "vehicle_node = codealign_ros.nodes.vehicle_node:main",
            "fusion_node = codealign_ros.nodes.fusion_node:main",
            "bag_player = codealign_ros.nodes.bag_player:main",
            "demo_recorder = codealign_ros.demo.recorder:main",
        ],
    },
)
