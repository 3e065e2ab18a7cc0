"""Hub folders and model cards for OTSeg and ZegOT models."""

from .cards import check_eval_results, model_card
from .folders import default_image_processor, push_otseg_folder, save_otseg_folder

__all__ = ["check_eval_results", "default_image_processor", "model_card", "push_otseg_folder", "save_otseg_folder"]
