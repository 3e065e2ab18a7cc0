"""OTSegImageProcessor (odd inputs, resizing, labels, post-processing) and sliding-window inference."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoImageProcessor

from otseg_hf import OTSegImageProcessor, sliding_window_inference
from otseg_hf.model.sliding_window import window_boxes
from tests.spec_resize import spec_bilinear, spec_nearest

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RAW = dict(do_resize=False, do_rescale=False, do_normalize=False, do_pad=False)  # pixel values as read


def raw_pixels(image, **kwargs) -> np.ndarray:
    """(H, W, 3) values the processor reads from `image`, without resizing or normalising."""
    processor = OTSegImageProcessor(**RAW)
    return processor(image, return_tensors="np", **kwargs)["pixel_values"][0].transpose(1, 2, 0)


# ----------------------------------------------------------------------------------------------------
# normalisation and resizing
# ----------------------------------------------------------------------------------------------------
def test_imagenet_normalisation_of_a_constant_image():
    image = PIL.Image.new("RGB", (4, 3), (10, 200, 128))
    values = OTSegImageProcessor(do_resize=False, do_pad=False)(image, return_tensors="np")["pixel_values"]
    expected = (np.array([10, 200, 128]) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert values.shape == (1, 3, 3, 4)
    np.testing.assert_allclose(values[0, :, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(values[0], np.broadcast_to(expected[:, None, None], (3, 3, 4)), rtol=1e-5)


@pytest.mark.parametrize(
    "image_size, size, expected",
    [
        ((375, 500), {"shortest_edge": 512}, (512, 683)),  # VOC: 500 * 512/375 = 682.67 -> 683 (mmcv rounds)
        ((500, 375), {"shortest_edge": 512}, (683, 512)),
        ((480, 640), {"shortest_edge": 520}, (520, 693)),  # 640 * 520/480 = 693.33
        ((17, 5000), {"shortest_edge": 32}, (32, 9412)),  # 5000 * 32/17 = 9411.76, no cap by default
        ((17, 5000), {"shortest_edge": 32, "longest_edge": 64}, (1, 64)),  # 17 * 64/5000 = 0.22 -> at least 1
        ((300, 1000), {"shortest_edge": 512, "longest_edge": 2048}, (512, 1707)),  # cap not reached
        ((100, 1000), {"shortest_edge": 512, "longest_edge": 2048}, (205, 2048)),  # cap: scale 2.048
        ((1, 1), {"shortest_edge": 32}, (32, 32)),
        ((37, 21), {"height": 16, "width": 24}, (16, 24)),
    ],
)
def test_output_size(image_size, size, expected):
    assert OTSegImageProcessor(size=size).get_output_size(image_size) == expected


def test_resize_and_normalise_follow_the_spec():
    """Bilinear as cv2 (spec section 9, tests/spec_resize.py), then ImageNet's normalisation; PIL's BILINEAR
    (antialiased) would differ when shrinking."""
    rng = np.random.default_rng(0)
    for shape, size in [((30, 50, 3), 32), ((64, 40, 3), 17)]:  # enlarge, shrink
        array = rng.integers(0, 256, size=shape, dtype=np.uint8)
        processor = OTSegImageProcessor(size={"shortest_edge": size}, do_pad=False)
        values = processor(PIL.Image.fromarray(array), return_tensors="np")["pixel_values"][0]
        height, width = processor.get_output_size(shape[:2])
        resized = spec_bilinear(array, height, width).astype(np.float32)
        expected = ((resized / 255.0 - MEAN) / STD).transpose(2, 0, 1)
        assert values.shape == (3, height, width)
        np.testing.assert_allclose(values, expected, atol=1e-5)


def test_tiny_and_extreme_images():
    processor = OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
    one = processor(PIL.Image.new("RGB", (1, 1), (255, 0, 0)), return_tensors="pt")["pixel_values"]
    assert one.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(one[0, :, 5, 7].numpy(), (np.array([1.0, 0, 0]) - MEAN) / STD, rtol=1e-5)

    strip = np.random.default_rng(1).integers(0, 256, size=(17, 5000, 3), dtype=np.uint8)
    padded = processor(strip, return_tensors="pt")["pixel_values"]
    unpadded = processor(strip, do_pad=False, return_tensors="pt")["pixel_values"]
    assert unpadded.shape == (1, 3, 32, 9412)
    assert padded.shape == (1, 3, 32, 9416)  # width padded to a multiple of 8
    torch.testing.assert_close(padded[..., :9412], unpadded)
    assert torch.count_nonzero(padded[..., 9412:]) == 0

    capped = OTSegImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}, do_pad=False)
    assert capped(strip, return_tensors="pt")["pixel_values"].shape == (1, 3, 1, 64)


# ----------------------------------------------------------------------------------------------------
# image kinds and modes
# ----------------------------------------------------------------------------------------------------
def test_rgba_drops_alpha():
    rgba = np.random.default_rng(2).integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colours are kept, not composited on a background
    np.testing.assert_array_equal(raw_pixels(PIL.Image.fromarray(rgba, mode="RGBA")), rgba[..., :3])
    np.testing.assert_array_equal(raw_pixels(rgba), rgba[..., :3])


def test_grayscale_is_repeated():
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(raw_pixels(PIL.Image.fromarray(grey, mode="L")), expected)
    np.testing.assert_array_equal(raw_pixels(grey), expected)
    np.testing.assert_array_equal(raw_pixels(grey[:, :, None]), expected)
    np.testing.assert_array_equal(raw_pixels(torch.from_numpy(grey)[None]), expected)  # (1, H, W) tensor


def test_palette_image_uses_its_colours():
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = PIL.Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]])
    np.testing.assert_array_equal(raw_pixels(image), colours[indices])


def test_16_bit_images_are_scaled():
    values = np.array([[0, 257, 65535], [1000, 30000, 65535]], dtype=np.uint16)
    expected = np.repeat((values.astype(np.float64) * 255 / 65535)[:, :, None], 3, axis=2)
    buffer = io.BytesIO()
    PIL.Image.fromarray(values).save(buffer, format="PNG")  # a 16-bit greyscale PNG
    reopened = PIL.Image.open(io.BytesIO(buffer.getvalue()))
    assert reopened.mode.startswith("I")
    np.testing.assert_allclose(raw_pixels(reopened), expected, rtol=1e-5)
    np.testing.assert_allclose(raw_pixels(values), expected, rtol=1e-5)
    rgb16 = np.stack([values, values // 2, values // 4], axis=2)
    np.testing.assert_allclose(raw_pixels(rgb16), rgb16 * (255 / 65535), rtol=1e-5)


def test_channels_first_tensor_and_float_array():
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(raw_pixels(torch.from_numpy(hwc).permute(2, 0, 1)), hwc)
    np.testing.assert_array_equal(raw_pixels(hwc.transpose(2, 0, 1)), hwc)
    np.testing.assert_allclose(raw_pixels(hwc.astype(np.float64)), hwc)  # floats are read on the 0..255 scale
    np.testing.assert_array_equal(raw_pixels(np.ones((2, 3), dtype=bool)), np.full((2, 3, 3), 255))


def test_exif_rotated_jpeg_is_made_upright():
    array = np.zeros((16, 32, 3), dtype=np.uint8)
    array[:8, :16] = (250, 10, 10)  # red top-left block of a landscape image
    image = PIL.Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=100, exif=exif.tobytes())
    stored = np.asarray(PIL.Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))  # as stored, 16x32
    pixels = raw_pixels(PIL.Image.open(io.BytesIO(buffer.getvalue())))
    assert pixels.shape == (32, 16, 3)  # portrait once upright
    np.testing.assert_array_equal(pixels, np.rot90(stored, k=-1))  # clockwise
    assert pixels[:16, 8:, 0].mean() > 200 and pixels[:16, :8, 0].mean() < 50  # red block now top-right


def test_bad_images_raise():
    processor = OTSegImageProcessor()
    with pytest.raises(ValueError, match="channel"):
        processor(np.zeros((5, 6, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        processor([])
    with pytest.raises(ValueError, match="PIL images, NumPy arrays or torch tensors"):
        processor(["not an image"])
    with pytest.raises(ValueError, match="shortest_edge"):
        OTSegImageProcessor(size={"longest_edge": 100})


# ----------------------------------------------------------------------------------------------------
# segmentation maps
# ----------------------------------------------------------------------------------------------------
def voc_palette_png(indices: np.ndarray) -> PIL.Image.Image:
    image = PIL.Image.fromarray(indices.astype(np.uint8), mode="P")
    colours = np.random.default_rng(4).integers(0, 256, size=(256, 3))
    colours[255] = (224, 224, 192)  # VOC's boundary colour
    image.putpalette(colours.astype(np.uint8).flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return PIL.Image.open(io.BytesIO(buffer.getvalue()))


def test_palette_png_labels_are_class_indices():
    indices = np.array([[0, 5, 15], [255, 19, 1]])
    label_png = voc_palette_png(indices)
    assert label_png.mode == "P"
    processor = OTSegImageProcessor(do_resize=False)
    labels = processor(np.zeros((2, 3, 3), np.uint8), segmentation_maps=label_png, return_tensors="pt")[
        "labels"
    ]
    assert labels.dtype == torch.int64
    # padded to 16x16 with the ignore index; the map itself is the indices, not colours
    np.testing.assert_array_equal(labels[0, :2, :3].numpy(), indices)
    assert (labels[0, 2:] == 255).all() and (labels[0, :, 3:] == 255).all()


def test_reduce_labels():
    label = np.array([[0, 1, 2], [255, 3, 0]], dtype=np.uint8)
    processor = OTSegImageProcessor(do_resize=False, do_pad=False, do_reduce_labels=True)
    labels = processor(np.zeros((2, 3, 3), np.uint8), segmentation_maps=label, return_tensors="np")["labels"]
    np.testing.assert_array_equal(labels[0], [[255, 0, 1], [255, 2, 255]])


def test_colour_and_mismatched_maps_raise():
    processor = OTSegImageProcessor()
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="class indices"):
        processor(image, segmentation_maps=PIL.Image.new("RGB", (5, 4)))
    with pytest.raises(ValueError, match="4x5"):
        processor(image, segmentation_maps=np.zeros((5, 4), np.int64))
    with pytest.raises(ValueError, match="2 images but 1 segmentation maps"):
        processor([image, image], segmentation_maps=[np.zeros((4, 5), np.int64)])
    with pytest.raises(ValueError, match="integer class indices"):
        processor(image, segmentation_maps=np.full((4, 5), 0.5))


def coloured_by_label(label: np.ndarray) -> np.ndarray:
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
    return colours[label]


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    size=st.sampled_from(
        [{"shortest_edge": 24}, {"shortest_edge": 16, "longest_edge": 30}, {"height": 13, "width": 29}]
    ),
    seed=st.integers(0, 2**16),
)
def test_labels_follow_images_under_every_resize(height, width, size, seed):
    """Labels are resized nearest as cv2 (spec section 9), image bilinear: wherever the resized image shows a pure class colour,
    the label is that class, and padding is ignore in the labels exactly where the image is padded."""
    rng = np.random.default_rng(seed)
    block = max(1, min(height, width) // 2)
    label = np.kron(
        rng.integers(0, 4, size=(height // block + 1, width // block + 1)), np.ones((block, block))
    )
    label = label[:height, :width].astype(np.int64)
    other = np.zeros((7, 9, 3), np.uint8)  # a second, differently sized image in the batch
    processor = OTSegImageProcessor(size=size, do_normalize=False, do_rescale=False, size_divisor=8)
    out = processor(
        [coloured_by_label(label), other],
        segmentation_maps=[label, np.zeros((7, 9), np.int64)],
        return_tensors="np",
    )
    out_h, out_w = processor.get_output_size((height, width))
    expected = spec_nearest(label, out_h, out_w)
    labels, pixels = out["labels"][0], out["pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_array_equal(labels[:out_h, :out_w], expected)
    assert (labels[out_h:] == 255).all() and (labels[:, out_w:] == 255).all()
    assert (pixels[out_h:] == 0).all() and (pixels[:, out_w:] == 0).all()
    assert labels.shape[0] % 8 == 0 and labels.shape[1] % 8 == 0
    pure = coloured_by_label(expected).astype(np.float32)
    exact = np.all(np.abs(pixels[:out_h, :out_w] - pure) < 0.5, axis=2)
    for k, colour in enumerate(coloured_by_label(np.arange(4))):
        is_colour = np.all(np.abs(pixels[:out_h, :out_w] - colour) < 0.5, axis=2)
        assert (expected[is_colour & exact] == k).all()


def test_mixed_sizes_without_padding():
    processor = OTSegImageProcessor(size={"shortest_edge": 16}, do_pad=False)
    images = [np.zeros((10, 20, 3), np.uint8), np.zeros((20, 10, 3), np.uint8)]
    values = processor(images, return_tensors=None)["pixel_values"]
    assert [v.shape for v in values] == [(3, 16, 32), (3, 32, 16)]
    with pytest.raises(ValueError, match="do_pad=True"):
        processor(images, return_tensors="pt")


def test_save_and_load_through_auto_image_processor(tmp_path):
    processor = OTSegImageProcessor(
        size={"shortest_edge": 520, "longest_edge": 2048}, size_divisor=8, do_reduce_labels=True
    )
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is OTSegImageProcessor
    assert dict(loaded.size) == {"shortest_edge": 520, "longest_edge": 2048}
    assert loaded.size_divisor == 8 and loaded.do_reduce_labels is True
    assert tuple(loaded.image_mean) == (0.485, 0.456, 0.406)


# ----------------------------------------------------------------------------------------------------
# post-processing
# ----------------------------------------------------------------------------------------------------
def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_post_process_returns_requested_sizes():
    processor = OTSegImageProcessor()
    outputs = SimpleNamespace(logits=torch.randn(2, 3, 4, 5))
    maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(7, 9), (16, 20)])
    assert [tuple(m.shape) for m in maps] == [(7, 9), (16, 20)]
    assert all(m.dtype == torch.int64 for m in maps)
    assert [tuple(m.shape) for m in processor.post_process_semantic_segmentation(outputs)] == [(4, 5)] * 2
    probabilities = {"probabilities": torch.rand(1, 3, 10, 12)}
    (resized,) = processor.post_process_semantic_segmentation(probabilities, target_sizes=[(5, 6)])
    assert tuple(resized.shape) == (5, 6)
    with pytest.raises(ValueError, match="2 target sizes for a batch of 1"):
        processor.post_process_semantic_segmentation(probabilities, target_sizes=[(5, 6), (5, 6)])


def test_seen_class_penalty_on_a_hand_made_case():
    """p(seen class 0) = 0.62, p(unseen class 1) = 0.55 everywhere: class 0 wins without calibration, class 1
    with the 0.1 penalty (0.52 < 0.55); a penalty on class 1 instead keeps class 0."""
    logits = torch.tensor([logit(0.62), logit(0.55), logit(0.1)]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    outputs = SimpleNamespace(logits=logits)
    processor = OTSegImageProcessor()
    plain = processor.post_process_semantic_segmentation(outputs, target_sizes=[(3, 4)])[0]
    calibrated = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(3, 4)], seen_label_ids=[0]
    )[0]
    other = processor.post_process_semantic_segmentation(outputs, seen_label_ids=[1])[0]
    assert (plain == 0).all() and (calibrated == 1).all() and (other == 0).all()
    result = processor.post_process_semantic_segmentation(
        outputs, seen_label_ids=[0], return_segmentation_scores=True
    )[0]
    torch.testing.assert_close(result["segmentation_scores"][:, 0, 0], torch.tensor([0.62, 0.55, 0.1]))
    with pytest.raises(ValueError, match="out of range"):
        processor.post_process_semantic_segmentation(outputs, seen_label_ids=[3])


def test_a_negative_seen_class_penalty_favours_the_seen_classes():
    """p(seen class 0) = 0.50, p(unseen class 1) = 0.53: class 1 wins as it is and with a positive penalty;
    -0.05 lifts class 0 to 0.55 > 0.53."""
    logits = torch.tensor([logit(0.50), logit(0.53), logit(0.1)]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    outputs = SimpleNamespace(logits=logits)
    processor = OTSegImageProcessor()
    for penalty, expected in ((0.0, 1), (0.05, 1), (-0.02, 1), (-0.05, 0)):
        (labels,) = processor.post_process_semantic_segmentation(
            outputs, seen_label_ids=[0], seen_class_penalty=penalty
        )
        assert (labels == expected).all(), penalty


def test_post_process_upsamples_logits_before_the_sigmoid():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 3, 5) * 3
    maps = OTSegImageProcessor().post_process_semantic_segmentation(
        SimpleNamespace(logits=logits), target_sizes=[(9, 11)], seen_label_ids=[1, 3], seen_class_penalty=0.2
    )
    probs = F.interpolate(logits, size=(9, 11), mode="bilinear", align_corners=False).sigmoid()[0]
    probs[[1, 3]] -= 0.2
    torch.testing.assert_close(maps[0], probs.argmax(0))


# ----------------------------------------------------------------------------------------------------
# sliding windows
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "height, width, window, stride, rows, cols",
    [
        (10, 10, 8, 4, [(0, 8), (2, 10)], [(0, 8), (2, 10)]),
        (5, 20, 8, 6, [(0, 5)], [(0, 8), (6, 14), (12, 20)]),
        (8, 8, 8, 4, [(0, 8)], [(0, 8)]),
        (683, 512, 512, 426, [(0, 512), (171, 683)], [(0, 512)]),  # a VOC image at the test scale
    ],
)
def test_window_boxes_follow_mmseg(height, width, window, stride, rows, cols):
    assert window_boxes(height, width, window, stride) == [
        (y1, y2, x1, x2) for y1, y2 in rows for x1, x2 in cols
    ]


class ColumnMeanModel(torch.nn.Module):
    """A stand-in model: each window's logits are constant, +m for class 0 and -m for class 1, where m is the
    window's mean of channel 0; patch 4."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        vision = SimpleNamespace(patch_size=4)
        self.config = SimpleNamespace(
            inference_window_size=8,
            inference_window_stride=4,
            clip_config=SimpleNamespace(vision_config=vision),
        )
        self.calls = []

    def forward(self, pixel_values, text_embeds=None):
        self.calls.append((tuple(pixel_values.shape), text_embeds))
        n, _, h, w = pixel_values.shape
        mean = pixel_values[:, 0].mean(dim=(1, 2)).view(n, 1, 1, 1)
        logits = torch.cat([mean, -mean], dim=1).expand(n, 2, h // 4, w // 4)
        return SimpleNamespace(logits=logits)


def test_overlapping_windows_average_probabilities():
    """8x12 image, windows 8 wide with stride 4: [0, 8) and [4, 12). Channel 0 holds column / 4, so the windows'
    means are 0.875 and 1.875; the middle columns average the two windows' probabilities."""
    columns = torch.arange(12, dtype=torch.float32) / 4
    pixel_values = columns.view(1, 1, 1, 12).expand(1, 3, 8, 12).clone()
    model = ColumnMeanModel()
    probs = sliding_window_inference(model, pixel_values, window_batch_size=1).probabilities
    sig = torch.sigmoid
    a, b = sig(torch.tensor(0.875)), sig(torch.tensor(1.875))
    expected_row = torch.cat([a.repeat(4), ((a + b) / 2).repeat(4), b.repeat(4)])
    assert probs.shape == (1, 2, 8, 12)
    torch.testing.assert_close(probs[0, 0], expected_row.expand(8, 12))
    expected_other = torch.cat(
        [sig(-torch.tensor(0.875)).repeat(4), ((1 - a + 1 - b) / 2).repeat(4), (1 - b).repeat(4)]
    )
    torch.testing.assert_close(probs[0, 1], expected_other.expand(8, 12))
    assert [shape for shape, _ in model.calls] == [(1, 3, 8, 8)] * 2
    batched = sliding_window_inference(model, pixel_values, window_batch_size=8).probabilities
    torch.testing.assert_close(batched, probs)
    assert model.calls[-1][0] == (2, 3, 8, 8)  # both windows in one forward


def test_small_windows_are_padded_to_the_patch_size_and_cropped():
    """A 6x6 image (smaller than the window, not a multiple of patch 4) is padded to 8x8 with zeros; the
    prediction is cropped back to 6x6."""
    pixel_values = torch.full((1, 3, 6, 6), 2.0)
    model = ColumnMeanModel()
    probs = sliding_window_inference(model, pixel_values).probabilities
    assert model.calls[0][0] == (1, 3, 8, 8)
    mean = 2.0 * 36 / 64  # zeros fill the padding
    torch.testing.assert_close(probs[0, 0], torch.sigmoid(torch.tensor(mean)).expand(6, 6))


def test_one_window_equals_whole_image_inference(make_model):
    model = make_model()
    torch.manual_seed(1)
    pixel_values = torch.randn(2, 3, 32, 40)
    probs = sliding_window_inference(model, pixel_values, window_size=48, stride=16).probabilities
    with torch.no_grad():
        logits = model(pixel_values).logits
    expected = F.interpolate(logits, size=(32, 40), mode="bilinear", align_corners=False).sigmoid()
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)

    odd = pixel_values[:, :, :30, :37]  # padded to 32x40 inside, cropped back
    probs = sliding_window_inference(model, odd, window_size=48, stride=16).probabilities
    with torch.no_grad():
        logits = model(F.pad(odd, (0, 3, 0, 2))).logits
    expected = F.interpolate(logits, size=(32, 40), mode="bilinear", align_corners=False).sigmoid()
    torch.testing.assert_close(probs, expected[:, :, :30, :37], rtol=1e-5, atol=1e-6)


def test_sliding_window_with_another_vocabulary(make_model, tokenizer):
    model = make_model()
    prompts = [template.format(name) for name in ["cat", "dog"] for template in model.config.prompt_templates]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    pixel_values = torch.randn(1, 3, 32, 48)
    by_ids = sliding_window_inference(model, pixel_values, **tokens).probabilities
    text_embeds = model.get_text_embeddings(tokens["input_ids"], tokens["attention_mask"])
    by_embeds = sliding_window_inference(model, pixel_values, text_embeds=text_embeds).probabilities
    assert by_ids.shape == (1, 2, 32, 48)
    torch.testing.assert_close(by_ids, by_embeds)


def test_ambiguous_layouts():
    """(4, 5, 1) is a 4x5 grey array; a (3, 4, 3) tensor is channels-first, the same array channels-last."""
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5, 1)
    assert raw_pixels(grey).shape == (4, 5, 3)
    cube = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    np.testing.assert_array_equal(raw_pixels(torch.from_numpy(cube)), cube.transpose(1, 2, 0))
    np.testing.assert_array_equal(raw_pixels(cube), cube)
