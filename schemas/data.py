"""`data:` where images and captions come from, and the curriculum over the stage's steps."""
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .base import NAME_PATTERN, Block, LocalPath, PlainData, tagged
from .targets import TARGET_PATTERN, load_target, search_path

MAX_COMPLEXITY = 5
# The embedded shapes vocabulary (runtime/data/shapes.py draws them): a class-conditional model's classes
# are the (colour, shape) of an image's first object, named "red circle", in this order (shape-major).
SHAPE_NAMES = ("circle", "square", "triangle")
COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "cyan")
SHAPES_CLASSES = tuple(f"{color} {shape}" for shape in SHAPE_NAMES for color in COLOR_NAMES)
# Every word a shapes caption can hold (numbers, sizes, colours, shapes and plurals, positions, relations):
# a DreamBooth identifier must be none of them, nor share one's token.
SHAPES_WORDS = frozenset({"a", "two", "three", "small", "large", *COLOR_NAMES, *SHAPE_NAMES,
                          *(f"{shape}s" for shape in SHAPE_NAMES), "on", "the", "left", "right", "at", "top",
                          "bottom", "above", "below", "to", "of"})


# ----------------------------------------------------------------------------- toy 2-D targets
class GaussianMixture(Block):
    kind: Literal["gaussian_mixture"] = Field("gaussian_mixture", description="Isotropic Gaussian components (closed-form oracles exist).")
    means: list[tuple[float, float]] = Field(description="Component means, one [x, y] each.", min_length=1)
    stds: list[float] = Field(description="Component standard deviations, one per mean.", min_length=1)
    weights: list[float] | None = Field(None, description="Mixture weights (normalised); omitted: equal.")

    @model_validator(mode="after")
    def _same_lengths(self):
        if len(self.stds) != len(self.means):
            raise ValueError(f"stds has {len(self.stds)} entries but means has {len(self.means)}")
        if self.weights is not None and len(self.weights) != len(self.means):
            raise ValueError(f"weights has {len(self.weights)} entries but means has {len(self.means)}")
        if any(s < 0 for s in self.stds) or any(w <= 0 for w in self.weights or []):
            raise ValueError("stds must be >= 0 and weights > 0")
        return self


class Checkerboard(Block):
    kind: Literal["checkerboard"] = Field("checkerboard", description="Uniform on the dark squares of a checkerboard.")
    squares: int = Field(4, ge=2, description="Squares per side.")
    extent: float = Field(4.0, gt=0, description="Side length of the board, centred on the origin.")


class Rings(Block):
    kind: Literal["rings"] = Field("rings", description="Concentric rings with radial Gaussian noise.")
    num_rings: int = Field(3, ge=1, description="How many rings.")
    radius: float = Field(1.0, gt=0, description="Radius of the innermost ring; ring k has radius k*radius.")
    noise: float = Field(0.05, ge=0, description="Radial noise std.")


class Moons(Block):
    kind: Literal["moons"] = Field("moons", description="Two interleaved half circles.")
    noise: float = Field(0.05, ge=0, description="Gaussian noise std.")


Toy2DDistribution = tagged(GaussianMixture, Checkerboard, Rings, Moons)


# ------------------------------------------------------------------------------------- filters
class Filter(Block):
    """Keep the samples whose `field` (the caption, or a metadata field) passes every condition given."""

    field: str = Field("caption", description="'caption', 'file' (an image's path in its folder, a webdataset "
                       "sample's key) or a metadata field (metadata.jsonl key, webdataset .json key).")
    contains: str | None = Field(None, description="Keep when the field contains this text (case-insensitive).")
    regex: str | None = Field(None, description="Keep when this regular expression matches the field.")
    min: float | None = Field(None, description="Keep when the field is a number >= this (e.g. an aesthetic score).")
    max: float | None = Field(None, description="Keep when the field is a number <= this.")
    equals: str | float | None = Field(None, description="Keep when the field equals this.")
    one_of: list[str] | None = Field(None, description="Keep when the field is one of these (e.g. field: file and the "
                                     "file names of a curated subset).")
    one_of_file: LocalPath | None = Field(None, description="Keep when the field is one of the lines of this text "
                                          "file (blank lines and lines starting with # ignored).")


_FILTERS = Field(default_factory=list, description="Subset selection (e.g. an SFT subset); every filter must pass.")


# ------------------------------------------------------------------------------------- sources
class Shapes(Block):
    kind: Literal["shapes"] = Field("shapes", description="Embedded procedural captioned images of coloured shapes (any size and aspect).")
    num_images: int = Field(10000, gt=0, description="Images per epoch (each is generated from its index and the seed).")
    background: Literal["white", "black", "noise"] = Field("white", description="Background of every image.")
    filters: list[Filter] = _FILTERS


class Toy2D(Block):
    kind: Literal["toy2d"] = Field("toy2d", description="Embedded 2-D point distributions for fast algorithm checks.")
    distribution: Toy2DDistribution = Field(description="Which 2-D distribution.")
    num_samples: int = Field(100_000, gt=0, description="Points per epoch.")


class ImageFolder(Block):
    kind: Literal["imagefolder"] = Field("imagefolder", description="A local folder of images with captions.")
    path: LocalPath = Field(description="The folder.")
    captions: Literal["auto", "sidecar", "metadata", "none"] = Field(
        "auto", description="sidecar: NAME.txt beside each image; metadata: metadata.jsonl with file_name and text; "
        "auto: metadata.jsonl if present, else sidecars; none: no captions (empty text: unconditional training, or "
        "DreamBooth instance images, which then take the instance prompt).")
    filters: list[Filter] = _FILTERS


class WebDataset(Block):
    kind: Literal["webdataset"] = Field("webdataset", description="Tar shards in the webdataset layout, streamed.")
    urls: str = Field(description="Shard paths, brace patterns allowed (e.g. /data/shards-{0000..0099}.tar).")
    image_key: str = Field("jpg;png;jpeg;webp", description="Extensions tried for the image, ';'-separated.")
    caption_key: str = Field("txt", description="Extension of the caption member.")
    num_samples: int | None = Field(None, gt=0, description="Samples in all shards (for epoch and bucket counts).")
    filters: list[Filter] = _FILTERS


class ModuleData(Block):
    kind: Literal["module"] = Field("module", description="Your own image source: a class 'package.module:Name' "
                                    "built with `options` as keyword arguments, with __len__(), caption(i) and image(i) "
                                    "(a PIL image or an (H, W, 3) uint8 array); optionally size(i) -> (height, width), "
                                    "read for bucketing instead of decoding every image, and key(i), a stable identity "
                                    "for caches and reports (default: the index).")
    target: str = Field(pattern=TARGET_PATTERN, description="Import path 'package.module:Name' (looked up beside the "
                        "spec file, then in the working directory, then on the import path).")
    options: dict[str, PlainData] = Field(default_factory=dict, description="Keyword arguments of the class.")

    @field_validator("target")
    @classmethod
    def _a_class(cls, target: str, info: ValidationInfo) -> str:
        context = info.context or {}
        if context.get("import_targets", True):
            found = load_target(target, search_path(context.get("spec_dir")))
            if not isinstance(found, type) or not all(hasattr(found, m) for m in ("__len__", "caption", "image")):
                raise ValueError(f"'{target}' is not a class with __len__, caption(i) and image(i)")
        return target


ImageSource = tagged(Shapes, ImageFolder, WebDataset, ModuleData)


class Component(Block):
    name: str = Field(pattern=NAME_PATTERN, description="Name of this part of the mixture (phases reweight by it).")
    weight: float = Field(1.0, gt=0, description="Share of each batch drawn from it (normalised over components).")
    source: ImageSource = Field(description="The source.")


class Mixture(Block):
    kind: Literal["mixture"] = Field("mixture", description="Several image sources, sampled in proportion to their weights.")
    components: list[Component] = Field(min_length=1, description="The sources and their weights.")

    @model_validator(mode="after")
    def _unique(self):
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        return self

    @model_validator(mode="after")
    def _no_streamed_component(self):
        # A mixture plans every component's epoch up front from item counts and sizes; a webdataset is
        # streamed and has neither. Refused here, with the component's position, rather than at run time.
        streamed = [i for i, c in enumerate(self.components) if c.source.kind == "webdataset"]
        if not streamed:
            return self
        raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
            type=PydanticCustomError("value_error", "component '{name}' is a webdataset source, which cannot be "
                                     "part of a mixture: use the webdataset source on its own (data.source), or "
                                     "convert its shards to an image folder", {"name": self.components[i].name}),
            loc=("components", i, "source", "kind"), input="webdataset") for i in streamed])


Source = tagged(Shapes, Toy2D, ImageFolder, WebDataset, ModuleData, Mixture)


# ---------------------------------------------------------------------------------- curriculum
class Phase(Block):
    at_step: int = Field(0, ge=0, description="Stage step at which this phase starts (the first phase starts at 0).")
    resolution: int = Field(64, gt=0, description="Side of the square whose area every bucket keeps (pixels).")
    aspect_ratios: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="Bucket aspect ratios (height / width); images go to the nearest in log ratio.")
    complexity: tuple[int, int] = Field(
        (1, 3), description=f"Caption complexity band [lowest, highest], levels 1..{MAX_COMPLEXITY}.")
    mixture: dict[str, float] | None = Field(
        None, description="Component weights for this phase (by component name); omitted: the mixture's own.")

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.complexity
        if not 1 <= lo <= hi <= MAX_COMPLEXITY:
            raise ValueError(f"complexity must satisfy 1 <= lowest <= highest <= {MAX_COMPLEXITY}, got [{lo}, {hi}]")
        if any(r <= 0 for r in self.aspect_ratios):
            raise ValueError("aspect ratios must be > 0")
        return self


class Buckets(Block):
    crop: Literal["center", "random"] = Field("center", description="After resizing an image to cover its bucket.")
    balanced: bool = Field(False, description="Draw every bucket equally often (small buckets repeat), so rare "
                           "aspect ratios are not starved by square-dominated data.")
    remainder: Literal["repeat", "drop"] = Field(
        "repeat", description="A bucket's last, incomplete batch: filled with repeats of the bucket's images, or "
        "dropped. Either way the counts are reported by `flowspec plan` and in the run log.")


class Cache(Block):
    latents: bool = Field(False, description="Cache VAE latents on disk, keyed by the content of everything they depend on.")
    text: bool = Field(False, description="Cache the embeddings of frozen text encoders the same way.")
    repa_targets: bool = Field(False, description="Cache REPA's frozen vision-encoder features of the clean images.")
    dir: LocalPath = Field(".cache/flowspec", description="Cache folder, shared by stages and runs.")


class Loader(Block):
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    prefetch_factor: int = Field(2, gt=0, description="Batches each worker prepares ahead.")


class Data(Block):
    source: Source = Field(description="Where samples come from.")
    curriculum: list[Phase] = Field(default_factory=lambda: [{}], validate_default=True, min_length=1,
                                    description="Phases over the stage's steps: resolution, aspect buckets, complexity.")
    buckets: Buckets = Field(default_factory=dict, validate_default=True, description="Aspect-ratio bucketing.")
    cache: Cache = Field(default_factory=dict, validate_default=True, description="On-disk caches of encoder outputs.")
    loader: Loader = Field(default_factory=dict, validate_default=True, description="Data loading workers.")
    on_bad_sample: Literal["fail", "skip"] = Field(
        "fail", description="An image that cannot be read or decoded (corrupt, truncated, empty, unreadable). "
        "fail: stop with an error naming the file. skip: leave it out and go on; every skipped file is counted "
        "and named with its reason in the data report (data_report.json, `flowspec plan`, the run log). An "
        "unreadable header is found when the image is bucketed (image folders: before training, also by "
        "`flowspec plan`) and never reaches a batch; an image whose pixels fail to decode during training is "
        "replaced by another of its aspect bucket, chosen by the seed, epoch and data alone, so every process "
        "and every resume makes the same choice.")
