"""`evaluate` metric module: mIoU, mIoU(S), mIoU(U), hIoU and pixel accuracy (spec section 11).

evaluate's own `mean_iou` lives on the Hub and cannot be fetched offline; this script loads from a
local path and computes the same numbers plus the seen/unseen split:

```python
>>> import evaluate
>>> from otseg_hf.evaluation.metrics import EVALUATE_MODULE_PATH  # the path of this file
>>> metric = evaluate.load(EVALUATE_MODULE_PATH)
>>> metric.add_batch(predictions=[prediction_map], references=[label_map])
>>> metric.compute(num_labels=20, ignore_index=255, unseen_label_ids=[15, 16, 17, 18, 19])
```

`evaluate` stores every map until `compute`; for memory independent of the dataset size use
`otseg_hf.evaluation.metrics.SegmentationMetric` directly. Maps are stored as images: pass uint8, uint16 or
int32 arrays (int64 is downcast with a warning).
"""

import datasets
import evaluate
import numpy as np

# absolute: `evaluate.load` runs this script from a copy in its cache, where only this folder's modules
# (copied along for the relative import) are reachable relatively
from otseg_hf.model import image_transforms

from .metrics import compute_metrics, confusion_matrix

_DESCRIPTION = """
Per-class IoU from a confusion matrix over the pixels whose reference is not `ignore_index`; mean IoU over all
classes, over the seen classes (mIoU(S)) and over the unseen classes (mIoU(U)); their harmonic mean hIoU;
pixel accuracy. Classes absent from both predictions and references have IoU NaN and are left out of means.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `ndarray` (height, width)): predicted class ids.
    references (`list` of `ndarray` (height, width)): ground-truth class ids, `ignore_index` for none.
    num_labels (`int`): number of classes K.
    ignore_index (`int`, defaults to 255): reference value of pixels that are not evaluated.
    unseen_label_ids (`list[int]`, *optional*): ids of the unseen classes.
    reduce_labels (`bool`, defaults to `False`): map reference 0 to `ignore_index` and the other ids to id - 1
        first (datasets whose 0 is a background that is not a class).
    nan_to_num (`float`, *optional*): replace NaN by this value in the results.

Returns:
    `dict`: mean_iou, seen_mean_iou, unseen_mean_iou, harmonic_mean_iou, overall_accuracy (pixel accuracy),
    mean_accuracy, per_category_iou, per_category_accuracy, per_category_pixels,
    per_category_predicted_pixels. Fractions in [0, 1].
"""


class OTSegMeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int = 255,
        unseen_label_ids=None,
        reduce_labels: bool = False,
        nan_to_num=None,
    ):
        matrix = 0
        for prediction, reference in zip(predictions, references):
            reference = np.array(reference, dtype=np.int64)
            if reduce_labels:
                reference = image_transforms.reduce_labels(reference, ignore_index)
            matrix = matrix + confusion_matrix(np.array(prediction), reference, num_labels, ignore_index)
        if isinstance(matrix, int):
            matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
        results = compute_metrics(matrix, unseen_label_ids or ())
        if nan_to_num is not None:
            results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
        return results
