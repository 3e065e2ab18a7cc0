"""Every registration of OTSeg and ZegOT with transformers (`register()`), arranged by `import otseg_hf`.

- Auto classes: `AutoConfig`, `AutoModelForSemanticSegmentation`, `AutoImageProcessor`, `AutoProcessor` build our
  classes for the "otseg" and "zegot" model types, and `register_for_auto_class` makes `save_pretrained` write the
  `auto_map` and copy the code, so saved folders also load with `trust_remote_code=True` without otseg_hf.
- Pipelines: the task transformers lacks, "zero-shot-image-segmentation", through `PIPELINE_REGISTRY`; and
  transformers' own "image-segmentation" routed to `OTSegImageSegmentationPipeline` for OTSeg and ZegOT models only
  (`route_image_segmentation`, the one unusual mechanism: see its docstring for why nothing smaller works).
- Saved folders name the pipelines in config.json (`custom_pipelines`, see `model.pipeline_otseg`) for
  `trust_remote_code=True` where otseg_hf is not imported. With otseg_hf imported, `pipeline()` must not treat
  them as remote code: the installed config classes are marked `pipelines_installed` here and then leave that
  entry out when they read a config.json (the remote-code copies never are).

When: `import otseg_hf` imports neither torch nor transformers (the console scripts' `--help` would take seconds),
and registering needs both: `AutoConfig.register` takes a `PretrainedConfig` subclass, and transformers'
`configuration_utils` imports torch; the model mappings take the model classes themselves (`_LazyAutoMapping`
loads lazily only transformers' own models, by module name). So `import otseg_hf` calls
`register_when_transformers_loads()`: it registers at once if transformers' Auto machinery is loaded, and else
as soon as it is (`AUTO_MODULE`, which every Auto class and `pipeline()` import), at the end of the import that
loaded it, when no module of transformers or otseg_hf is half-initialised (`_RegisterAfterImport`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys

# imported by AutoConfig, hence by every Auto class, by `pipeline()` and by transformers' model classes
AUTO_MODULE = "transformers.models.auto.configuration_auto"
WATCHED = ("transformers", "otseg_hf")  # the packages whose imports `_RegisterAfterImport` follows


def model_classes() -> tuple[tuple[type, type], ...]:
    """(config class, model class) of OTSeg and ZegOT."""
    from .model.configuration_otseg import OTSegConfig
    from .model.configuration_zegot import ZegOTConfig
    from .model.modeling_otseg import OTSegForSemanticSegmentation
    from .model.modeling_zegot import ZegOTForSemanticSegmentation

    return (OTSegConfig, OTSegForSemanticSegmentation), (ZegOTConfig, ZegOTForSemanticSegmentation)


def register() -> None:
    """Register the Auto classes and the pipeline tasks (idempotent)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    from .model.image_processing_otseg import OTSegImageProcessor
    from .model.pipeline_otseg import OTSegZeroShotImageSegmentationPipeline
    from .model.processing_otseg import OTSegProcessor

    models = model_classes()
    for config_class, model_class in models:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForSemanticSegmentation.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(
            config_class, image_processor_classes={"pil": OTSegImageProcessor}, exist_ok=True
        )
        AutoProcessor.register(config_class, OTSegProcessor, exist_ok=True)
        # saved folders carry the code and an auto_map, so they load with trust_remote_code=True elsewhere
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForSemanticSegmentation")
    OTSegImageProcessor.register_for_auto_class("AutoImageProcessor")
    OTSegProcessor.register_for_auto_class("AutoProcessor")

    PIPELINE_REGISTRY.register_pipeline(
        "zero-shot-image-segmentation",
        pipeline_class=OTSegZeroShotImageSegmentationPipeline,
        pt_model=AutoModelForSemanticSegmentation,
        type="multimodal",
    )
    route_image_segmentation(PIPELINE_REGISTRY, model_types=tuple(c.model_type for c, _ in models))
    for config_class, _ in models:
        config_class.pipelines_installed = True


def register_when_transformers_loads() -> None:
    """`register()` now if transformers' Auto machinery is loaded, else right after the import that loads it."""
    if AUTO_MODULE in sys.modules:
        register()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


class _RegisterAfterImport:
    """A finder on `sys.meta_path` that finds nothing itself: for a module of transformers or otseg_hf it returns
    the spec the other finders return, with the loader's `exec_module` wrapped to count the modules being
    executed. Once `AUTO_MODULE` has been executed, the first time that count is back to zero (the outermost
    import is complete: no module `register()` imports is half-initialised) it leaves `sys.meta_path` and calls
    `register()`. Other imports pass through untouched; transformers' own `_LegacyModuleAliasFinder` is a finder
    on `sys.meta_path` too."""

    def __init__(self) -> None:
        self.executing = 0
        self.auto_loaded = False
        self.done = False

    def find_spec(self, fullname, path=None, target=None):
        if self.done or fullname.partition(".")[0] not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        # source and bytecode loaders are one instance per module: wrapping it changes no other module's loading
        if isinstance(spec.loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)):
            spec.loader.exec_module = self._counted(fullname, spec.loader.exec_module)
        return spec

    def _counted(self, fullname: str, exec_module):
        def exec_module_then_register(module) -> None:
            self.executing += 1
            try:
                exec_module(module)
            finally:
                self.executing -= 1
            self.auto_loaded = self.auto_loaded or fullname == AUTO_MODULE
            if self.auto_loaded and self.executing == 0 and not self.done:
                self.done = True
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                register()

        return exec_module_then_register


def route_image_segmentation(registry, model_types: tuple[str, ...]) -> None:
    """Make transformers' "image-segmentation" task build an `OTSegImageSegmentationPipeline` for models whose
    `config.model_type` is in `model_types`, and for every other model exactly what it built before.

    `registry` is transformers' `PIPELINE_REGISTRY`, which picks a pipeline class by task name only. The task's
    entry keeps its model classes and default model; its class becomes a subclass of the one registered before
    (transformers' `ImageSegmentationPipeline`) whose `__new__` builds the pipeline for the model it is given.
    `pipeline()` reads the loading flags (`_load_tokenizer`...) from that subclass before it builds the pipeline,
    and they are the previous class's but one: no video processor is loaded. Transformers' segmentation pipeline
    never reads one, and for a folder with its own image-processor code (ours) transformers would infer a remote
    video processor from it and ask whether to run it. Routing twice is a no-op.
    """
    from .model.pipeline_otseg import OTSegImageSegmentationPipeline

    entry = registry.supported_tasks["image-segmentation"]
    previous = _resolve_pipeline_class(entry["impl"])
    if getattr(previous, "routed_model_types", None) == model_types:
        return

    class ImageSegmentationRouter(previous):
        """The "image-segmentation" class of transformers' `pipeline()` once otseg_hf is imported: builds an
        `OTSegImageSegmentationPipeline` or the class registered before (see `route_image_segmentation`)."""

        routed_model_types = model_types
        _load_video_processor = False

        def __new__(cls, *args, **kwargs):
            model = kwargs["model"] if "model" in kwargs else args[0]
            routed = getattr(getattr(model, "config", None), "model_type", None) in model_types
            # neither class is cls or a subclass of it, so Python does not call __init__ on the result again
            return (OTSegImageSegmentationPipeline if routed else previous)(*args, **kwargs)

    registry.supported_tasks["image-segmentation"] = {**entry, "impl": ImageSegmentationRouter}


def _resolve_pipeline_class(impl) -> type:
    """A registry entry's `impl`: a class, or the dotted path transformers registers its own tasks with."""
    if isinstance(impl, str):
        module, name = impl.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    return impl


__all__ = ["AUTO_MODULE", "model_classes", "register", "register_when_transformers_loads", "route_image_segmentation"]
