"""OTSeg and ZegOT for Hugging Face transformers. Importing the package registers them with transformers' Auto
classes and pipelines (`otseg_hf.registration`)."""

from .model.configuration_otseg import OTSegConfig
from .model.configuration_zegot import ZegOTConfig
from .model.image_processing_otseg import OTSegImageProcessor
from .model.modeling_otseg import (
    OTSegForSemanticSegmentation,
    OTSegPreTrainedModel,
    OTSegSemanticSegmenterOutput,
)
from .model.modeling_zegot import (
    ZegOTForSemanticSegmentation,
    ZegOTPreTrainedModel,
    ZegOTPromptLearner,
    ZegOTSemanticSegmenterOutput,
)
from .model.pipeline_otseg import (
    OTSegImageSegmentationPipeline,
    OTSegZeroShotImageSegmentationPipeline,
)
from .model.processing_otseg import OTSegProcessor
from .model.sinkhorn import log_sinkhorn
from .model.sliding_window import OTSegSlidingWindowOutput, sliding_window_inference
from .registration import register

register()

__version__ = "0.1.0"

__all__ = [
    "OTSegConfig",
    "OTSegForSemanticSegmentation",
    "OTSegImageProcessor",
    "OTSegImageSegmentationPipeline",
    "OTSegPreTrainedModel",
    "OTSegProcessor",
    "OTSegSemanticSegmenterOutput",
    "OTSegSlidingWindowOutput",
    "OTSegZeroShotImageSegmentationPipeline",
    "ZegOTConfig",
    "ZegOTForSemanticSegmentation",
    "ZegOTPreTrainedModel",
    "ZegOTPromptLearner",
    "ZegOTSemanticSegmenterOutput",
    "log_sinkhorn",
    "sliding_window_inference",
]
