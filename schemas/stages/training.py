"""Pre-training, continued training / SFT, and DreamBooth: flow matching on data."""
from __future__ import annotations

from typing import ClassVar, Iterator, Literal

from pydantic import Field, model_validator

from ..base import Block, tagged
from ..data import Source
from ..rewards import VisionEncoder
from .base import Note, OpSpec, StageBase


class Repa(Block):
    kind: Literal["repa"] = Field("repa", description="REPA: align a block's tokens with a frozen vision encoder's patch features.")
    encoder: VisionEncoder = Field(default_factory=dict, validate_default=True, description="Frozen target encoder.")
    depth: int = Field(8, gt=0, description="Align the output of this transformer block (1-based; REPA: 8 of 28).")
    lambda_: float = Field(0.5, alias="lambda", ge=0, description="Coefficient of the REPA loss.")
    projector_dim: int = Field(2048, gt=0, description="Hidden width of the 3-layer MLP projector.")


# Extra loss terms, a union tagged by kind (REPA for now).
AuxLoss = tagged(Repa)


class FlowMatchingStage(StageBase):
    """Flow matching on the stage's data, with optional extra loss terms."""

    objective: ClassVar[str] = "flow_matching"

    aux_losses: list[AuxLoss] = Field(
        default_factory=list, description="Extra loss terms (REPA), each added to the flow-matching loss; several "
        "REPA terms may align different blocks or encoders.")

    def extra_ops(self) -> Iterator[OpSpec]:
        yield from super().extra_ops()
        for j, extra in enumerate(self.aux_losses):
            yield OpSpec("vision_encoder", {"encoder": extra.encoder.kind, "for": extra.kind, "depth": extra.depth,
                                            "index": j}, ("aux_losses", j))


class Pretrain(FlowMatchingStage):
    """Rectified flow / conditional flow matching (Liu et al. 2022, "Flow Straight and Fast"; Lipman et al.
    2022, "Flow Matching"): x_t = (1 - t) x0 + t eps with t the noise level, and the model regresses the velocity
    v = eps - x0 at timesteps drawn by `timesteps` (logit-normal and resolution-dependent shift: Esser et al. 2024,
    SD3). Optional REPA (Yu et al. 2024) aligns hidden states with a frozen vision encoder's features."""

    kind: Literal["pretrain"] = Field("pretrain", description="Flow-matching pre-training.")


class Finetune(FlowMatchingStage):
    """Flow matching continued from an earlier stage or a folder (`from`): continued training, supervised
    fine-tuning on curated data, or LoRA adaptation (Hu et al. 2021); the same flow-matching objective as
    pretrain."""

    needs_start: ClassVar[bool] = True

    kind: Literal["finetune"] = Field("finetune", description="Continued training or supervised fine-tuning on a curated subset.")


class Prior(Block):
    class_prompt: str = Field(description="Prompt of the class, e.g. 'a photo of a star'.")
    num_images: int = Field(100, gt=0, description="Class images generated once by the frozen starting model.")
    lambda_: float = Field(1.0, alias="lambda", ge=0, description="Weight of the prior-preservation loss.")
    sampling_steps: int = Field(28, gt=0, description="Sampler steps for the class images.")


class DreamBooth(StageBase):
    """DreamBooth (Ruiz et al. 2022): the subject's few images captioned with a rare identifier word, plus
    prior preservation, a flow-matching loss on class images the starting model generates (weight `prior.weight`),
    so the class keeps its diversity; usually with LoRA."""

    needs_start: ClassVar[bool] = True
    objective: ClassVar[str] = "dreambooth"

    kind: Literal["dreambooth"] = Field("dreambooth", description="DreamBooth: bind a rare identifier to a subject, with prior preservation.")
    instance_data: Source = Field(description="The few subject images.")
    instance_prompt: str = Field(description="Prompt with the identifier, e.g. 'a photo of sks star'.")
    identifier: str = Field("sks", description="The rare token standing for the subject. Checked against the text "
                            "encoder: the builtin one must not know the word; a pretrained one's tokenizer.json must "
                            "read it as one token from the rare half of its vocabulary (a common word is refused, "
                            "several pieces are a warning).")
    prior: Prior | None = Field(None, description="Prior preservation; null: plain fine-tuning on the subject.")
    validation_prompts: list[str] = Field(
        [], description="The identifier in new contexts, e.g. 'a sks star on the moon': rows of the subject grid "
        "(samples/subject-step-N.png), after the instance prompt and before the plain class prompt.")

    @model_validator(mode="after")
    def _identifier_in_prompt(self):
        for where, prompt in [("instance_prompt", self.instance_prompt), *(
                (f"validation_prompts[{i}]", p) for i, p in enumerate(self.validation_prompts))]:
            if self.identifier not in prompt.split():
                raise ValueError(f"{where} {prompt!r} does not contain the identifier {self.identifier!r}")
        return self

    def class_prompt(self) -> str:
        """The plain class prompt: the prior's, or the instance prompt without the identifier."""
        if self.prior is not None:
            return self.prior.class_prompt
        return " ".join(word for word in self.instance_prompt.split() if word != self.identifier)

    def validation_prompts_grid(self) -> tuple[str, ...]:
        return (self.instance_prompt, *self.validation_prompts, self.class_prompt())

    def extra_ops(self) -> Iterator[OpSpec]:
        yield from super().extra_ops()
        yield OpSpec("instance_data", {"source": self.instance_data.kind}, ("instance_data",))
        if self.prior is not None:
            yield OpSpec("generate_prior", {"num_images": self.prior.num_images,
                                            "sampling_steps": self.prior.sampling_steps}, ("prior",))

    def findings(self, spec) -> Iterator[Note]:
        yield from super().findings(spec)
        if self.instance_data.kind == "toy2d":
            yield Note(("instance_data", "kind"), "DreamBooth subjects are images")
        if self.prior and self.identifier in self.prior.class_prompt.split():
            yield Note(("prior", "class_prompt"), f"the class prompt contains the identifier '{self.identifier}': "
                       "prior images would learn the subject", "warning")
        encoder = spec.model.text_encoder
        if encoder is not None and encoder.kind == "builtin":
            clash = self._known_to_builtin(spec)
            if clash:
                yield Note(("identifier",), clash)
        elif encoder is not None:
            yield from self._rare_to_tokenizer(encoder)

    def _rare_to_tokenizer(self, encoder) -> Iterator[Note]:
        """A pretrained encoder's tokenizer (its tokenizer.json; none there: nothing to check) must read the
        identifier as one rare token (schemas/vocabulary.py)."""
        from ..vocabulary import rarity, tokenizer_file

        path = tokenizer_file(encoder)
        if path is None:
            return
        prompts = [self.instance_prompt, *self.validation_prompts, self.class_prompt()]
        found = rarity(path, self.identifier, encoder.kind, frozenset(w for p in prompts for w in p.lower().split()))
        if found is not None:
            severity, message = found
            yield Note(("identifier",), message, severity)

    def _known_to_builtin(self, spec) -> str | None:
        """Why the identifier is no new word to the builtin encoder (it hashes words to tokens): a word of its
        captions or the prompts, or a word sharing one's token."""
        from ..data import SHAPES_WORDS
        from ..model import builtin_token, builtin_words

        ident = builtin_words(self.identifier)
        if len(ident) != 1:
            return f"the identifier '{self.identifier}' is not one word to the builtin text encoder (it reads {ident})"
        word = ident[0]
        shapes = any(_uses_shapes(source) for source in (self.data.source, self.instance_data))
        captions = SHAPES_WORDS if shapes else frozenset()
        if word in captions:
            return (f"the identifier '{self.identifier}' is a word of the shapes captions the builtin text encoder "
                    "reads: pick a new word")
        # (a class prompt holding the identifier itself is the warning above)
        prompts = builtin_words(self.instance_prompt) + builtin_words(self.prior.class_prompt if self.prior else "")
        known = (set(prompts) | captions) - {word}
        same = sorted(w for w in known if builtin_token(w) == builtin_token(word))
        if same:
            return (f"the identifier '{self.identifier}' shares the builtin text encoder's token {builtin_token(word)} "
                    f"with '{same[0]}': pick another new word")
        return None


def _uses_shapes(source) -> bool:
    components = getattr(source, "components", None)
    return any(_uses_shapes(c.source) for c in components) if components else source.kind == "shapes"
