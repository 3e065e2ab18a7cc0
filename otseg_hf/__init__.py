"""OTSeg and ZegOT for Hugging Face transformers."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

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
    route_image_segmentation,
)
from .model.processing_otseg import OTSegProcessor
from .model.sinkhorn import log_sinkhorn
from .model.sliding_window import OTSegSlidingWindowOutput, sliding_window_inference

for _config, _model in (
    (OTSegConfig, OTSegForSemanticSegmentation),
    (ZegOTConfig, ZegOTForSemanticSegmentation),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForSemanticSegmentation.register(_config, _model, exist_ok=True)
    AutoImageProcessor.register(_config, image_processor_classes={"pil": OTSegImageProcessor}, exist_ok=True)
    AutoProcessor.register(_config, OTSegProcessor, exist_ok=True)
    # saved folders carry the code and an auto_map, so they load with trust_remote_code=True elsewhere
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModelForSemanticSegmentation")
OTSegImageProcessor.register_for_auto_class("AutoImageProcessor")
OTSegProcessor.register_for_auto_class("AutoProcessor")
# Pipelines. Saved folders name them in config.json (`custom_pipelines`) for trust_remote_code=True where otseg_hf
# is not imported. Here they come from transformers' registry, as for its own models: the task transformers lacks,
# and its "image-segmentation" routed to our class for OTSeg and ZegOT models only; the installed configs then leave
# `custom_pipelines` out, so that pipeline() has no remote code to ask about.
PIPELINE_REGISTRY.register_pipeline(
    "zero-shot-image-segmentation",
    pipeline_class=OTSegZeroShotImageSegmentationPipeline,
    pt_model=AutoModelForSemanticSegmentation,
    type="multimodal",
)
route_image_segmentation(PIPELINE_REGISTRY, model_types=(OTSegConfig.model_type, ZegOTConfig.model_type))
for _config in (OTSegConfig, ZegOTConfig):
    _config.pipelines_installed = True

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
