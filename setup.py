"""facenet_tf: FaceNet face embeddings with offline Beam triplet mining (TF 2 / Keras 3)."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    with open(os.path.join(HERE, "requirements", name)) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith("-r")]


base = read_requirements("base.txt")
setup(
    name="facenet_tf",
    version="0.1.0",
    description="FaceNet face embeddings in TensorFlow 2 / Keras 3 with offline triplet "
                "mining as an Apache Beam job",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["facenet_tf", "facenet_tf.*", "beam_jobs", "beam_jobs.*"]),
    package_data={"facenet_tf": ["datasets/orl_faces/README*", "datasets/orl_faces/images/*/*"]},
    python_requires=">=3.10",
    install_requires=base,
    extras_require={
        "test": read_requirements("test.txt"),
        # GPU: install requirements/gpu.txt, then `pip install --no-deps -e .` (see README).
    },
    license="Apache-2.0",
)
