"""The two TFRecord formats of facenet_tf, defined once.

Image records (written by beam_jobs.build_dataset): one tf.train.Example per face image.
Triplet records (written by beam_jobs.mine_triplets, read by the trainer): one tf.train.Example
per mined triplet, carrying the image ids and labels of anchor, positive and negative and the
mining metadata. A generation stores each of its images once, as image records in its own
image shards (IMAGE_SHARD_PREFIX, listed under "image_shards" in its manifest): a subset of
1,800 faces yields ~70,000 semi-hard triplets, so three copies of the encoded images per
triplet (format version 1) made a generation ~100x larger than the images it uses.
"""

import dataclasses

import tensorflow as tf

IMAGE_SHARD_PREFIX = "images"
TRIPLET_SHARD_PREFIX = "triplets"
SHARD_SUFFIX = ".tfrecord"
TRIPLET_FORMAT_VERSION = 2
ROLES = ("anchor", "positive", "negative")

# Image record keys.
ENCODED = "image/encoded"
FORMAT = "image/format"
LABEL = "image/label"
IDENTITY = "image/identity"
IMAGE_ID = "image/id"
HEIGHT = "image/height"
WIDTH = "image/width"


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One face image as stored: encoded bytes plus identity and a stable id."""
    encoded: bytes
    format: str          # "png" or "jpeg"
    label: int           # integer identity label, from the dataset's label map
    identity: str        # identity (folder) name
    image_id: str        # stable id, "<identity>/<file name>"
    height: int
    width: int


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def image_example(record: ImageRecord) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        ENCODED: _bytes(record.encoded),
        FORMAT: _bytes(record.format.encode()),
        LABEL: _int(record.label),
        IDENTITY: _bytes(record.identity.encode()),
        IMAGE_ID: _bytes(record.image_id.encode()),
        HEIGHT: _int(record.height),
        WIDTH: _int(record.width),
    }))


IMAGE_FEATURE_SPEC = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    IDENTITY: tf.io.FixedLenFeature([], tf.string),
    IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
}


def parse_image_example(serialized):
    """tf.data map function: serialized image record -> dict of tensors keyed as above."""
    return tf.io.parse_single_example(serialized, IMAGE_FEATURE_SPEC)


def image_record_from_bytes(serialized: bytes) -> ImageRecord:
    """Eager (Beam-side) parse; raises ValueError naming the missing or bad field."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature

    def get(key, kind):
        if key not in feature:
            raise ValueError(f"image record has no field {key!r}")
        values = getattr(feature[key], kind).value
        if len(values) != 1:
            raise ValueError(f"image record field {key!r} has {len(values)} values, want 1")
        return values[0]

    return ImageRecord(
        encoded=get(ENCODED, "bytes_list"),
        format=get(FORMAT, "bytes_list").decode(),
        label=int(get(LABEL, "int64_list")),
        identity=get(IDENTITY, "bytes_list").decode(),
        image_id=get(IMAGE_ID, "bytes_list").decode(),
        height=int(get(HEIGHT, "int64_list")),
        width=int(get(WIDTH, "int64_list")),
    )


@dataclasses.dataclass(frozen=True)
class MiningInfo:
    """How a triplet was mined: by which model, with which rule, at what distances."""
    model: str           # model fingerprint or training step, e.g. "step-1200" or a hash
    strategy: str
    alpha: float
    generation: int
    d_ap: float          # squared L2 distance anchor-positive under that model
    d_an: float          # squared L2 distance anchor-negative under that model


def triplet_example(anchor: ImageRecord, positive: ImageRecord, negative: ImageRecord,
                    info: MiningInfo) -> tf.train.Example:
    """The triplet record of three images (their ids and labels; the images go to the
    generation's image shards)."""
    return triplet_example_from_ids(
        [(r.image_id, r.label) for r in (anchor, positive, negative)], info)


def triplet_example_from_ids(members, info: MiningInfo) -> tf.train.Example:
    """The triplet record of [(image_id, label)] x 3 (anchor, positive, negative)."""
    feature = {"triplet/version": _int(TRIPLET_FORMAT_VERSION)}
    for role, (image_id, label) in zip(ROLES, members):
        feature[f"{role}/id"] = _bytes(image_id.encode())
        feature[f"{role}/label"] = _int(label)
    feature.update({
        "mining/model": _bytes(info.model.encode()),
        "mining/strategy": _bytes(info.strategy.encode()),
        "mining/alpha": _float(info.alpha),
        "mining/generation": _int(info.generation),
        "mining/d_ap": _float(info.d_ap),
        "mining/d_an": _float(info.d_an),
    })
    return tf.train.Example(features=tf.train.Features(feature=feature))


class TripletEncoder:
    """Serializes many triplet records of one generation fast: one Example is built once and
    only its per-triplet fields are overwritten for each record (about 15x faster than
    building a new Example; the miner writes ~40 triplets per image).

    encode(members, d_ap, d_an) returns exactly
    triplet_example_from_ids(members, info).SerializeToString(deterministic=True) with the
    generation's `info` fields and these distances.
    """

    def __init__(self, model: str, strategy: str, alpha: float, generation: int):
        info = MiningInfo(model=model, strategy=strategy, alpha=float(alpha),
                          generation=int(generation), d_ap=0.0, d_an=0.0)
        self._example = triplet_example_from_ids([("", 0)] * 3, info)
        feature = self._example.features.feature
        self._ids = [feature[f"{role}/id"].bytes_list.value for role in ROLES]
        self._labels = [feature[f"{role}/label"].int64_list.value for role in ROLES]
        self._d_ap = feature["mining/d_ap"].float_list.value
        self._d_an = feature["mining/d_an"].float_list.value

    def encode(self, members, d_ap: float, d_an: float) -> bytes:
        for ids, labels, (image_id, label) in zip(self._ids, self._labels, members):
            ids[0] = image_id.encode()
            labels[0] = int(label)
        self._d_ap[0] = d_ap
        self._d_an[0] = d_an
        return self._example.SerializeToString(deterministic=True)


TRIPLET_FEATURE_SPEC = {
    "triplet/version": tf.io.FixedLenFeature([], tf.int64),
    **{f"{role}/{key}": tf.io.FixedLenFeature([], dtype)
       for role in ROLES
       for key, dtype in (("id", tf.string), ("label", tf.int64))},
    "mining/model": tf.io.FixedLenFeature([], tf.string),
    "mining/strategy": tf.io.FixedLenFeature([], tf.string),
    "mining/alpha": tf.io.FixedLenFeature([], tf.float32),
    "mining/generation": tf.io.FixedLenFeature([], tf.int64),
    "mining/d_ap": tf.io.FixedLenFeature([], tf.float32),
    "mining/d_an": tf.io.FixedLenFeature([], tf.float32),
}


def parse_triplet_example(serialized):
    """tf.data map function: serialized triplet record -> dict of tensors.

    Fails (InvalidArgument) on a record of another format version.
    """
    version = tf.io.parse_single_example(
        serialized, {"triplet/version": tf.io.FixedLenFeature([], tf.int64)})["triplet/version"]
    check = tf.debugging.assert_equal(
        version, tf.constant(TRIPLET_FORMAT_VERSION, tf.int64),
        message=f"triplet record of an unsupported format version (this code reads version "
                f"{TRIPLET_FORMAT_VERSION}; mine the generation again with this version of "
                f"beam_jobs.mine_triplets)")
    with tf.control_dependencies([check]):
        return tf.io.parse_single_example(serialized, TRIPLET_FEATURE_SPEC)


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"
