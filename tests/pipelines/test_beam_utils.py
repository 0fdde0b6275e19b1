"""beam_utils' runner-neutral pieces on the in-process runner, against plain-Python oracles:
ParDoWithOutputs, KeyedBatches, WriteSideResults and the single-final-step check."""

import json
import os
import subprocess
import sys

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from facenet_tf.pipelines import beam_utils
from facenet_tf.pipelines.options import pipeline_options


def new_pipeline():
    return beam.Pipeline(options=pipeline_options())


class EvensAndOdds(beam.DoFn):
    """Main output: even numbers times the factor set in setup(); tagged "odd": odd ones."""

    def setup(self):
        self._factor = 10

    def process(self, n):
        if n % 2:
            yield beam.pvalue.TaggedOutput("odd", n)
        else:
            yield n * self._factor


def words_and_lengths(text):
    yield from text.split()
    yield beam.pvalue.TaggedOutput("length", len(text))


def test_par_do_with_outputs_splits_a_dofn_s_outputs_by_tag():
    numbers = list(range(11))
    with new_pipeline() as p:
        outputs = (p | beam.Create(numbers)
                   | beam_utils.ParDoWithOutputs(EvensAndOdds(), "odd"))
        assert set(outputs) == {beam_utils.MAIN, "odd"}
        assert_that(outputs[beam_utils.MAIN], equal_to([n * 10 for n in numbers if n % 2 == 0]),
                    label="main")
        assert_that(outputs["odd"], equal_to([n for n in numbers if n % 2]), label="odd")


def test_par_do_with_outputs_takes_a_function_like_flat_map():
    texts = ["a bb", "ccc", ""]
    with new_pipeline() as p:
        outputs = (p | beam.Create(texts)
                   | beam_utils.ParDoWithOutputs(words_and_lengths, "length"))
        assert_that(outputs[beam_utils.MAIN], equal_to([w for t in texts for w in t.split()]),
                    label="main")
        assert_that(outputs["length"], equal_to([len(t) for t in texts]), label="length")


def test_par_do_with_outputs_reserves_the_main_tag():
    with pytest.raises(ValueError, match="main"):
        beam_utils.ParDoWithOutputs(words_and_lengths, beam_utils.MAIN)


def expected_batches(ids, batch_size, num_groups):
    """The oracle: ids grouped by the stable hash, each group sorted and cut in order."""
    groups = {}
    for i in ids:
        groups.setdefault(beam_utils.stable_hash("batch", i) % num_groups, []).append(i)
    batches = []
    for members in groups.values():
        members.sort()
        batches += [tuple(members[s:s + batch_size]) for s in range(0, len(members), batch_size)]
    return sorted(batches)


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_keyed_batches_are_the_same_whatever_the_input_order(order):
    ids = [f"id{i:03d}" for i in range(100)]
    batch_size = 7
    transform = beam_utils.KeyedBatches(lambda x: x, batch_size, expected_count=len(ids))
    assert transform.num_groups == -(-100 // (batch_size * beam_utils.BATCHES_PER_GROUP))
    with new_pipeline() as p:
        batches = (p | beam.Create(ids if order == "sorted" else ids[::-1])
                   | transform | beam.Map(tuple))
        assert_that(batches, equal_to(expected_batches(ids, batch_size, transform.num_groups)))


def test_keyed_batches_use_the_id_function():
    items = [{"id": f"x{i}", "value": i} for i in range(5)]
    with new_pipeline() as p:
        batches = (p | beam.Create(items)
                   | beam_utils.KeyedBatches(lambda d: d["id"], 10, expected_count=5)
                   | beam.Map(lambda batch: [d["value"] for d in batch]))
        assert_that(batches, equal_to([[0, 1, 2, 3, 4]]))


def test_write_side_results_writes_every_name_once_in_a_fixed_order(tmp_path):
    stats = [{"subset": 2, "n": 1}, {"subset": 0, "n": 5}, {"n": 3, "subset": 1}]
    with new_pipeline() as p:
        ({"stats": p | "Stats" >> beam.Create(stats),
          "empty": p | "Empty" >> beam.Create([]),
          "numbers": p | "Numbers" >> beam.Create([3, 1, 2])}
         | beam_utils.WriteSideResults(str(tmp_path)))
    results = beam_utils.read_side_results(str(tmp_path))
    assert results == {
        "stats": sorted(stats, key=lambda d: json.dumps(d, sort_keys=True)),
        "empty": [], "numbers": [1, 2, 3]}
    assert os.listdir(tmp_path) == [beam_utils.SIDE_RESULTS_NAME]


def test_a_branch_that_does_not_feed_the_last_step_is_refused():
    p = new_pipeline()
    numbers = p | "Numbers" >> beam.Create([1, 2])
    _ = numbers | "Dangling" >> beam.Map(str)
    _ = numbers | "Last" >> beam.Map(abs)
    with pytest.raises(ValueError, match=r"last step \(Last\).*Dangling"):
        beam_utils.run_to_completion(p)


def test_a_pipeline_whose_branches_all_reach_the_last_step_runs(tmp_path):
    p = new_pipeline()
    numbers = p | "Numbers" >> beam.Create([1, 2])
    both = ({"a": numbers | "A" >> beam.Map(str), "b": numbers | "B" >> beam.Map(abs)}
            | "Final" >> beam_utils.WriteSideResults(str(tmp_path)))
    assert both is not None
    beam_utils.run_to_completion(p)
    assert beam_utils.read_side_results(str(tmp_path)) == {"a": ["1", "2"], "b": [1, 2]}


def test_one_thread_per_op_takes_effect_only_before_tensorflow_starts():
    # In a fresh process: set, and TensorFlow then reports one intra-op thread.
    code = ("from facenet_tf.pipelines import beam_utils; import tensorflow as tf; "
            "print(beam_utils.one_thread_per_op(), "
            "tf.config.threading.get_intra_op_parallelism_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "1"]
    # Here, after an op has run: refused, and the setting is left as it was.
    before = tf.config.threading.get_intra_op_parallelism_threads()
    tf.constant(1) + 1
    assert beam_utils.one_thread_per_op() is (before == 1)
    assert tf.config.threading.get_intra_op_parallelism_threads() == before
