"""Tests of `otseg_hf.evaluation.metrics` against a plain numpy confusion matrix and a transcription of evaluate's
`mean_iou`; streaming, merging (also across two real processes) and the printed table."""

from __future__ import annotations

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from otseg_hf.evaluation.metrics import (
    EVALUATE_MODULE_PATH,
    NO_PIXELS,
    SegmentationMetric,
    compute_metrics,
    confusion_matrix,
)

NUM_CLASSES = 7
UNSEEN = [2, 5, 6]
IGNORE = 255


def random_batch(seed, batch=3, height=9, width=11):
    """Labels use classes 0..4 and ignore (5 and 6 never occur); predictions use 0..5 (6 never predicted)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=(batch, height, width))
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    predictions = rng.integers(0, 6, size=(batch, height, width))
    agree = rng.random(labels.shape) < 0.5  # make IoUs far from 0
    predictions[agree & (labels != IGNORE)] = labels[agree & (labels != IGNORE)]
    return predictions, labels


# ----------------------------------------------------------------------------------------------------
# independent references
# ----------------------------------------------------------------------------------------------------
def numpy_confusion(predictions, labels, num_classes, ignore_index):
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for prediction, label in zip(np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)):
        if label != ignore_index:
            matrix[label, prediction] += 1
    return matrix


def numpy_metrics(matrix, unseen):
    """Per class by the definitions: IoU = TP / (TP + FP + FN), NaN when TP + FP + FN = 0."""
    num_classes = matrix.shape[0]
    iou, accuracy = [], []
    for k in range(num_classes):
        tp = matrix[k, k]
        fn = matrix[k, :].sum() - tp
        fp = matrix[:, k].sum() - tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        accuracy.append(tp / (tp + fn) if tp + fn else math.nan)

    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    seen_mean = mean([iou[k] for k in range(num_classes) if k not in unseen])
    unseen_mean = mean([iou[k] for k in unseen])
    return {
        "per_category_iou": np.array(iou),
        "per_category_accuracy": np.array(accuracy),
        "mean_iou": mean(iou),
        "mean_accuracy": mean(accuracy),
        "seen_mean_iou": seen_mean,
        "unseen_mean_iou": unseen_mean,
        "harmonic_mean_iou": 2 * seen_mean * unseen_mean / (seen_mean + unseen_mean),
        "overall_accuracy": np.trace(matrix) / matrix.sum(),
    }


def evaluate_mean_iou(results, gt_seg_maps, num_labels, ignore_index):
    """evaluate's metrics/mean_iou/mean_iou.py (intersect_and_union + mean_iou), transcribed."""
    total = [np.zeros((num_labels,), dtype=np.float64) for _ in range(4)]
    for pred_label, label in zip(results, gt_seg_maps):
        pred_label, label = np.array(pred_label), np.array(label)
        mask = np.not_equal(label, ignore_index)
        pred_label = pred_label[mask]
        label = np.array(label)[mask]
        intersect = pred_label[pred_label == label]
        area_intersect = np.histogram(intersect, bins=num_labels, range=(0, num_labels - 1))[0]
        area_pred_label = np.histogram(pred_label, bins=num_labels, range=(0, num_labels - 1))[0]
        area_label = np.histogram(label, bins=num_labels, range=(0, num_labels - 1))[0]
        area_union = area_pred_label + area_label - area_intersect
        for acc, value in zip(total, (area_intersect, area_union, area_pred_label, area_label)):
            acc += value
    total_area_intersect, total_area_union, _, total_area_label = total
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = total_area_intersect / total_area_union
        acc = total_area_intersect / total_area_label
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(acc),
        "overall_accuracy": total_area_intersect.sum() / total_area_label.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": acc,
    }


def assert_same(results, reference):
    for key, value in reference.items():
        np.testing.assert_allclose(results[key], value, rtol=1e-12, atol=0, equal_nan=True, err_msg=key)


# ----------------------------------------------------------------------------------------------------
# correctness
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_plain_numpy_confusion_matrix(seed):
    predictions, labels = random_batch(seed)
    metric = SegmentationMetric(NUM_CLASSES, unseen_label_ids=UNSEEN)
    metric.update(torch.from_numpy(predictions), torch.from_numpy(labels))
    reference_matrix = numpy_confusion(predictions, labels, NUM_CLASSES, IGNORE)
    np.testing.assert_array_equal(metric.confusion_matrix.numpy(), reference_matrix)
    results = metric.compute()
    assert_same(results, numpy_metrics(reference_matrix, UNSEEN))
    # class 6: never in labels nor predictions -> NaN; class 5: predicted only -> IoU 0, accuracy NaN
    assert math.isnan(results["per_category_iou"][6]) and math.isnan(results["per_category_accuracy"][6])
    assert results["per_category_iou"][5] == 0 and math.isnan(results["per_category_accuracy"][5])
    np.testing.assert_array_equal(results["per_category_pixels"], reference_matrix.sum(1))


@pytest.mark.parametrize("seed", [3, 4])
def test_equals_evaluate_mean_iou_math(seed):
    predictions, labels = random_batch(seed)
    maps_p, maps_y = list(predictions), list(labels)
    results = SegmentationMetric(NUM_CLASSES).update(maps_p, maps_y).compute()  # lists of numpy maps
    assert_same(results, evaluate_mean_iou(maps_p, maps_y, NUM_CLASSES, IGNORE))


def test_by_hand_seen_unseen_harmonic():
    labels = np.array([[0, 0, 0, 0, 1, 1, 2, 2, 255]])
    predictions = np.array([[0, 0, 0, 1, 1, 1, 2, 0, 2]])
    results = SegmentationMetric(3, unseen_label_ids=[2]).update(predictions, labels).compute()
    # IoU0 = 3 / (4 + 4 - 3), IoU1 = 2 / (2 + 3 - 2), IoU2 = 1 / (2 + 1 - 1)
    np.testing.assert_allclose(results["per_category_iou"], [3 / 5, 2 / 3, 1 / 2])
    np.testing.assert_allclose(results["per_category_accuracy"], [3 / 4, 1, 1 / 2])
    assert results["seen_mean_iou"] == pytest.approx(19 / 30)
    assert results["unseen_mean_iou"] == pytest.approx(1 / 2)
    assert results["harmonic_mean_iou"] == pytest.approx(19 / 34)  # 2 (19/30)(1/2) / (19/30 + 15/30)
    assert results["mean_iou"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert results["overall_accuracy"] == pytest.approx(6 / 8)


def test_unseen_never_occurring_and_no_split():
    labels = np.array([[0, 1, 1, 255]])
    results = SegmentationMetric(3, unseen_label_ids=[2]).update(labels.copy(), labels).compute()
    assert math.isnan(results["unseen_mean_iou"]) and math.isnan(results["harmonic_mean_iou"])
    assert results["seen_mean_iou"] == 1.0
    results = SegmentationMetric(3).update(labels.copy(), labels).compute()  # fully supervised
    assert results["seen_mean_iou"] == results["mean_iou"] == 1.0


# ----------------------------------------------------------------------------------------------------
# streaming and merging
# ----------------------------------------------------------------------------------------------------
def test_streaming_equals_one_update():
    batches = [random_batch(seed, batch=2) for seed in range(4)]
    streamed = SegmentationMetric(NUM_CLASSES, UNSEEN)
    for predictions, labels in batches:
        streamed.update(predictions, labels)
    whole = SegmentationMetric(NUM_CLASSES, UNSEEN).update(
        np.concatenate([p for p, _ in batches]), np.concatenate([y for _, y in batches])
    )
    assert torch.equal(streamed.confusion_matrix, whole.confusion_matrix)
    assert_same(streamed.compute(), whole.compute())


def test_merging_halves_equals_whole_and_per_sample_matrices():
    predictions, labels = random_batch(5, batch=6)
    first = SegmentationMetric(NUM_CLASSES, UNSEEN).update(predictions[:3], labels[:3])
    second = SegmentationMetric(NUM_CLASSES, UNSEEN).update(predictions[3:], labels[3:])
    whole = SegmentationMetric(NUM_CLASSES, UNSEEN).update(predictions, labels)
    assert torch.equal(first.merge(second).confusion_matrix, whole.confusion_matrix)
    per_sample = confusion_matrix(
        torch.from_numpy(predictions), torch.from_numpy(labels), NUM_CLASSES, per_sample=True
    )
    assert per_sample.shape == (6, NUM_CLASSES, NUM_CLASSES)
    for index in range(6):
        expected = numpy_confusion(predictions[index], labels[index], NUM_CLASSES, IGNORE)
        np.testing.assert_array_equal(per_sample[index].numpy(), expected)
    from_gathered = SegmentationMetric(NUM_CLASSES, UNSEEN).update_confusion_matrix(per_sample)
    assert torch.equal(from_gathered.confusion_matrix, whole.confusion_matrix)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _distributed_worker(rank, world_size, port, predictions, labels, queue):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    shard = slice(rank, None, world_size)
    # 1. per-process update, then a sum over processes
    reduced = SegmentationMetric(NUM_CLASSES, UNSEEN).update(predictions[shard], labels[shard])
    reduced.reduce(accelerator)
    # 2. per-sample matrices through gather_for_metrics
    gathered = SegmentationMetric(NUM_CLASSES, UNSEEN)
    per_sample = confusion_matrix(
        torch.from_numpy(predictions[shard]), torch.from_numpy(labels[shard]), NUM_CLASSES, per_sample=True
    )
    gathered.update_confusion_matrix(accelerator.gather_for_metrics(per_sample))
    queue.put((rank, reduced.confusion_matrix.numpy(), gathered.confusion_matrix.numpy()))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_reduce_and_gather_across_two_processes():
    predictions, labels = random_batch(6, batch=4)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(
        _distributed_worker,
        args=(2, _free_port(), predictions, labels, queue),
        nprocs=2,
        start_method="spawn",
    )
    expected = numpy_confusion(predictions, labels, NUM_CLASSES, IGNORE)
    for _ in range(2):
        _, reduced, gathered = queue.get()
        np.testing.assert_array_equal(reduced, expected)
        np.testing.assert_array_equal(gathered, expected)


# ----------------------------------------------------------------------------------------------------
# checks, table, JSON, evaluate module
# ----------------------------------------------------------------------------------------------------
def test_out_of_range_ids_are_named():
    labels = np.array([[0, 1, 9, 255]])
    with pytest.raises(ValueError, match=r"label ids \[9\]"):
        confusion_matrix(np.zeros_like(labels), labels, 3)
    with pytest.raises(ValueError, match=r"predictions contain ids \[4\]"):
        confusion_matrix(np.array([[0, 4, 1, 4]]), np.array([[0, 1, 1, 255]]), 3)
    # a wrong prediction at an ignored pixel does not matter
    assert confusion_matrix(np.array([[0, 7]]), np.array([[0, 255]]), 3).sum() == 1


def test_table_says_no_pixels_instead_of_nan():
    predictions, labels = random_batch(7)
    names = [f"name{k}" for k in range(NUM_CLASSES)]
    metric = SegmentationMetric(NUM_CLASSES, UNSEEN, class_names=names).update(predictions, labels)
    table = metric.table()
    assert "nan" not in table.lower()
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith("name")}
    assert rows["name6"][1:] == ["unseen", *NO_PIXELS.split(), *NO_PIXELS.split(), "0"]  # never occurs
    assert (
        rows["name5"][1:3] == ["unseen", "0.00"] and NO_PIXELS in table.splitlines()[2 + 5]
    )  # predicted only
    expected_iou = numpy_metrics(numpy_confusion(predictions, labels, NUM_CLASSES, IGNORE), UNSEEN)[
        "per_category_iou"
    ]
    assert rows["name0"][2] == f"{100 * expected_iou[0]:.2f}"
    for label in ("mIoU", "mIoU(S)", "mIoU(U)", "hIoU", "pixel accuracy"):
        assert any(line.startswith(label) for line in table.splitlines())


def test_json_output(tmp_path):
    predictions, labels = random_batch(8)
    metric = SegmentationMetric(NUM_CLASSES, UNSEEN).update(predictions, labels)
    path = tmp_path / "metrics.json"
    metric.save_json(path)
    data = json.loads(path.read_text())
    json.dumps(data, allow_nan=False)  # strict JSON
    reference = numpy_metrics(numpy_confusion(predictions, labels, NUM_CLASSES, IGNORE), UNSEEN)
    assert data["harmonic_mean_iou"] == pytest.approx(reference["harmonic_mean_iou"])
    assert data["per_class"][6]["iou"] is None and data["per_class"][6]["split"] == "unseen"
    assert [row["iou"] for row in data["per_class"][:5]] == pytest.approx(
        list(reference["per_category_iou"][:5])
    )


def test_evaluate_module_loads_offline_and_agrees(tmp_path, monkeypatch):
    import evaluate  # here, not at the top: the spawned workers above re-import this module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    predictions, labels = random_batch(9)
    metric = evaluate.load(EVALUATE_MODULE_PATH, cache_dir=str(tmp_path))
    for prediction, label in zip(predictions, labels):
        metric.add(predictions=prediction.astype(np.uint8), references=label.astype(np.uint8))
    results = metric.compute(num_labels=NUM_CLASSES, ignore_index=IGNORE, unseen_label_ids=UNSEEN)
    assert_same(results, numpy_metrics(numpy_confusion(predictions, labels, NUM_CLASSES, IGNORE), UNSEEN))
    # reduce_labels: reference 0 -> ignore, k -> k - 1
    raw = np.where(labels == IGNORE, IGNORE, labels + 1)
    metric.add_batch(predictions=list(predictions.astype(np.uint8)), references=list(raw.astype(np.uint8)))
    reduced = metric.compute(num_labels=NUM_CLASSES, reduce_labels=True)
    assert_same(reduced, compute_metrics(numpy_confusion(predictions, labels, NUM_CLASSES, IGNORE)))
