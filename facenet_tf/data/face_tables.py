"""The tables of an indexed photo collection (beam_jobs.index_faces), as Apache Parquet files.

Two tables, sharded alike (a photo's rows all sit in shard stable_hash(photo) % num_shards):
- faces-SSSSS-of-NNNNN.parquet, one row per face found:
    photo (string, the photo's path relative to the collection), face (int32, its rank in the
    photo by detector score), box (fixed_size_list<float32>[4]: x1, y1, x2, y2 in pixels),
    score (float32, the detector's), is_main (bool, facenet_tf.detection.main_face),
    embedding (fixed_size_list<float32>[D], unit length), photo_sha256 (string),
    model_fingerprint (string);
- photos-SSSSS-of-NNNNN.parquet, one row per photo listed, faces or not:
    photo, sha256 (string; null when the file could not be read), status ("indexed",
    "no_face" or "unreadable"), reason (string or null), num_faces (int32), height, width
    (int32 pixels; 0 when unreadable).
Rows are sorted by photo, then face. Parquet because any data tool reads it without this
project's code (pyarrow, pandas, Polars, DuckDB, Spark, BigQuery, Beam's ReadFromParquet), with
a typed, self-describing schema, column by column (a search loads the small columns without the
embeddings). pyarrow comes with Apache Beam. Files are written whole to bytes, so they go
through tf.io.gfile (local or gs://) and are byte-identical for identical rows.
"""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

# The manifest's "format" and "version" of an index_faces output directory.
INDEX_FORMAT = "facenet_tf.face_index"
INDEX_VERSION = 1
FACES, PHOTOS = "faces", "photos"
SUFFIX = ".parquet"
INDEXED, NO_FACE, UNREADABLE = "indexed", "no_face", "unreadable"
STATUSES = (INDEXED, NO_FACE, UNREADABLE)
# The face columns a search needs, without the embeddings.
FACE_METADATA_COLUMNS = ("photo", "face", "box", "score", "is_main")


def faces_schema(embedding_dim: int) -> pa.Schema:
    return pa.schema([
        ("photo", pa.string()), ("face", pa.int32()), ("box", pa.list_(pa.float32(), 4)),
        ("score", pa.float32()), ("is_main", pa.bool_()),
        ("embedding", pa.list_(pa.float32(), int(embedding_dim))),
        ("photo_sha256", pa.string()), ("model_fingerprint", pa.string())])


PHOTOS_SCHEMA = pa.schema([
    ("photo", pa.string()), ("sha256", pa.string()), ("status", pa.string()),
    ("reason", pa.string()), ("num_faces", pa.int32()), ("height", pa.int32()),
    ("width", pa.int32())])


def shard_name(table: str, index: int, count: int) -> str:
    return f"{table}-{index:05d}-of-{count:05d}{SUFFIX}"


def _fixed_lists(rows, dim: int) -> pa.FixedSizeListArray:
    flat = np.asarray(rows, np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)


def faces_table(rows: list, embedding_dim: int) -> pa.Table:
    """Face rows (dicts with the schema's keys; box and embedding as arrays) -> a Table."""
    schema = faces_schema(embedding_dim)
    columns = {name: [r[name] for r in rows] for name in schema.names}
    arrays = [pa.array(columns[f.name], f.type) if f.name not in ("box", "embedding")
              else _fixed_lists(np.reshape(columns[f.name], (len(rows), f.type.list_size)),
                                f.type.list_size)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def photos_table(rows: list) -> pa.Table:
    """Photo rows (dicts with the schema's keys) -> a Table."""
    return pa.Table.from_arrays([pa.array([r[f.name] for r in rows], f.type)
                                 for f in PHOTOS_SCHEMA], schema=PHOTOS_SCHEMA)


def write_table(path: str, table: pa.Table) -> None:
    """Writes `table` as one Parquet file (written whole to memory first, then to `path`)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def read_table(path: str, columns=None) -> pa.Table:
    """A Parquet file (local or gs://) as a Table, only `columns` if given."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return pq.read_table(io.BytesIO(f.read()), columns=list(columns) if columns else None)


def rows(table: pa.Table) -> list:
    """A Table's rows as dicts; fixed-size list columns (box, embedding) as float32 arrays."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_fixed_size_list(column.type):
            columns[name] = list(fixed_list_array(column))
        else:
            columns[name] = column.to_pylist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def fixed_list_array(column) -> np.ndarray:
    """A fixed_size_list<float32>[k] column -> float32 [rows, k]."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    size = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, np.float32).reshape(-1, size)
