"""facenet_tf: FaceNet face embeddings with offline Beam triplet mining (TF 2 / Keras 3).

Two layers of requirements:
- here, COMPATIBLE RANGES, so `pip install facenet_tf` can sit next to other libraries: the
  lower bound is the release this project is tested with, the upper bound the next release
  that may break it (a TensorFlow minor release; otherwise the next major). Caps that belong to
  a dependency are left to that dependency's own metadata (apache-beam 2.77 caps numpy < 2.5
  and protobuf < 7), so they lift when it does.
- requirements/*.txt, the EXACT pins of one tested set, and requirements/lock.txt, every
  transitive package of that set pinned with hashes (`make lock` regenerates it); `make venv`
  and CI install the lock, then this package with --no-deps, then run `pip check`.
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL_REQUIRES = [
    # TensorFlow minor releases change the Keras / SavedModel / XLA behaviour the trainer and
    # the exporter rely on. CPU build by default; for NVIDIA GPUs see GPU below.
    "tensorflow-cpu~=2.21.0",
    "keras>=3.15,<4",
    # The training logs' viewer (`tensorboard --logdir`); tensorflow-cpu 2.21 does not declare it.
    "tensorboard>=2.21,<3",
    # [tfrecord]: WriteToTFRecord needs one of python-snappy, google-crc32c or crcmod.
    "apache-beam[tfrecord]>=2.77,<3",
    "tensorflow-datasets>=4.9.10,<5",
    # tensorflow-datasets declares it only for Python < 3.9, but builder_from_directory needs
    # it on 3.11 too.
    "importlib_resources>=7.1",
    "absl-py>=2.5,<3",
    "numpy>=2.4,<3",
    "matplotlib>=3.11,<4",
    "pillow>=12.3,<13",
    "scikit-learn>=1.9,<2",
    # Face detection: the MTCNN weights ship in the wheel (it brings lz4 and joblib itself).
    "mtcnn>=1.0,<2",
    "tqdm>=4.70,<5",
    # .tflite models run on LiteRT (the runtime an app installs without TensorFlow).
    "ai-edge-litert>=2.3,<3",
    # The tables of an indexed photo collection are Parquet files (apache-beam depends on it).
    "pyarrow>=25.0,<26",
    # Vector search for galleries and photo indexes.
    "faiss-cpu>=1.15,<2",
    # The HTTP service.
    "fastapi>=0.165,<1",
    "uvicorn>=0.55,<1",
    "python-multipart>=0.0.34,<1",
]

EXTRAS_REQUIRE = {
    # Beam's DaskRunner on a dask.distributed cluster (scripts/dask_cluster.py). Dask uses
    # calendar versions, so there is no major release to cap at; 2026.8.0 is the tested one.
    "dask": ["dask[distributed]>=2026.8.0"],
    "test": ["pytest>=9.2,<10", "pytest-xdist>=3.8,<4", "httpx>=0.29,<1"],
    # GPU: no extra, since an extra cannot take tensorflow-cpu out and both builds share one
    # import folder. Install requirements/lock-gpu.txt (FACENET_TF_GPU=1 make venv) or
    # requirements/gpu.txt, then `pip install --no-deps -e .`.
}

CONSOLE_SCRIPTS = [
    "facenet-train = facenet_tf.train:run",
    "facenet-mine = beam_jobs.mine_triplets:run",
    "facenet-build-dataset = beam_jobs.build_dataset:run",
    "facenet-evaluate = facenet_tf.evaluate:run",
    "facenet-export = facenet_tf.export:run",
    "facenet-embed = facenet_tf.embed:run",
    "facenet-compare = facenet_tf.compare:run",
    "facenet-cluster = facenet_tf.cluster:run",
    "facenet-pretrained = facenet_tf.pretrained:run",
    "facenet-demo = facenet_tf.demo:run",
    "facenet-make-pairs = facenet_tf.make_pairs:run",
    "facenet-align = beam_jobs.align_faces:run",
    "facenet-index = beam_jobs.index_faces:run",
    "facenet-search = facenet_tf.search:run",
    "facenet-enroll = facenet_tf.enroll:run",
    "facenet-identify = facenet_tf.identify:run",
    "facenet-serve = facenet_tf.serve:run",
]

with open(os.path.join(HERE, "README.md")) as f:
    long_description = f.read()

setup(
    name="facenet_tf",
    version="0.1.0",
    description="FaceNet face embeddings in TensorFlow 2 / Keras 3 with offline triplet "
                "mining as an Apache Beam job",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["facenet_tf", "facenet_tf.*", "beam_jobs", "beam_jobs.*"]),
    package_data={"facenet_tf": ["datasets/orl_faces/README*", "datasets/orl_faces/images/*/*",
                                 "recognition/calibrations/*.json"]},
    # numpy 2.4, keras 3.15 and scikit-learn 1.9 need Python >= 3.11.
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    license="Apache-2.0",
)
