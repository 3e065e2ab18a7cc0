"""Chunked post-processing: the label maps (and the winning class's probabilities) of resizing the classes in
chunks are those of resizing all classes at once (one chunk), to the bit, and agree with a literal transcription
of the plain path as it was before chunking (resize all as one (1, K, h, w) image, sigmoid, penalty, argmax):
the same label maps on these inputs, probabilities within a rounding (torch's bilinear kernel can round a value
differently with the channel count at small sizes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from otseg_hf.model.image_processing_otseg import OTSegImageProcessor


def plain(scores, target, seen, penalty, from_logits):
    """All classes at once, as the post-processing did before chunking."""
    item = scores.float()
    if target != tuple(item.shape[-2:]):
        item = F.interpolate(item, size=target, mode="bilinear", align_corners=False)
    probs = item[0].sigmoid() if from_logits else item[0]
    calibrated = probs.clone()
    calibrated[seen] -= penalty
    segmentation = calibrated.argmax(dim=0)
    return segmentation, probs


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("chunk_elements", [1, 37 * 29, 3 * 37 * 29, 2**24])
@pytest.mark.parametrize(("low", "target"), [((5, 7), (37, 29)), ((8, 8), (8, 8)), ((3, 4), (64, 61))])
def test_chunked_label_maps_are_the_plain_ones_to_the_bit(from_logits, chunk_elements, low, target):
    gen = torch.Generator().manual_seed(sum(target))
    scores = torch.randn(1, 11, *low, generator=gen)
    if not from_logits:
        scores = scores.sigmoid()
    scores[0, 4] = scores[0, 2]  # exact ties: the first class must win, as in argmax
    seen = [0, 2, 5]
    outputs = {"logits": scores} if from_logits else {"probabilities": scores}
    (result,) = OTSegImageProcessor().post_process_semantic_segmentation(
        outputs,
        target_sizes=[target],
        seen_label_ids=seen,
        seen_class_penalty=0.1,
        return_winning_scores=True,
        max_chunk_elements=chunk_elements,
    )
    (one_chunk,) = OTSegImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=[target], seen_label_ids=seen, seen_class_penalty=0.1, return_segmentation_scores=True
    )
    assert torch.equal(result["segmentation"], one_chunk["segmentation"])
    expected_winning = one_chunk["segmentation_scores"].gather(0, one_chunk["segmentation"][None])[0]
    assert torch.equal(result["winning_scores"], expected_winning)
    assert "segmentation_scores" not in result
    segmentation, probs = plain(scores, target, seen, 0.1, from_logits)
    assert torch.equal(result["segmentation"], segmentation)
    torch.testing.assert_close(one_chunk["segmentation_scores"], probs, rtol=1e-6, atol=1e-7)


def test_scores_are_returned_whole_when_asked():
    scores = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    results = OTSegImageProcessor().post_process_semantic_segmentation(
        {"logits": scores}, target_sizes=[(9, 9), (5, 3)], return_segmentation_scores=True, max_chunk_elements=1
    )
    for result, item, target in zip(results, scores.split(1), [(9, 9), (5, 3)]):
        segmentation, probs = plain(item, target, [], 0.0, True)
        assert torch.equal(result["segmentation"], segmentation)
        torch.testing.assert_close(result["segmentation_scores"], probs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_rejects_bad_chunk_size(bad):
    with pytest.raises(ValueError, match="max_chunk_elements must be a positive int"):
        OTSegImageProcessor().post_process_semantic_segmentation(
            {"logits": torch.zeros(1, 2, 2, 2)}, max_chunk_elements=bad
        )


def test_threshold_leaves_the_same_pixels_unlabelled_in_chunks():
    scores = torch.randn(1, 9, 5, 6, generator=torch.Generator().manual_seed(3)) - 1.0
    kwargs = dict(target_sizes=[(23, 17)], seen_label_ids=[1, 4], threshold=0.3)
    processor = OTSegImageProcessor()
    (whole,) = processor.post_process_semantic_segmentation({"logits": scores}, **kwargs)
    (chunked,) = processor.post_process_semantic_segmentation({"logits": scores}, max_chunk_elements=2 * 23 * 17, **kwargs)
    assert torch.equal(whole, chunked) and (whole == -1).any() and (whole >= 0).any()
