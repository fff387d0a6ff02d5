"""The classes of a class-conditional model: their names, and the class a prompt asks for.

shapes: the (colour, shape) of an image's first object, 18 classes named "red circle"; a prompt asks
for the class of its first colour and first shape word ("two blue squares" -> "blue square").
imagefolder: one class per top-level subfolder, named as the folder; a prompt is a class name.
The names travel with the exported model (classes.json), so `flowspec sample` maps prompts alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...schemas.data import COLOR_NAMES, SHAPE_NAMES, SHAPES_CLASSES
from .sources import DataError

CLASSES_FILE = "classes.json"


@dataclass(frozen=True)
class ClassNames:
    names: tuple[str, ...]
    matching: str  # "shapes": a prompt names a colour and a shape; "name": a prompt is a class name

    def label(self, prompt: str) -> int:
        """The class `prompt` asks for; ValueError naming the classes when it asks for none."""
        if self.matching == "shapes":
            words = [w.rstrip("s") if w.rstrip("s") in SHAPE_NAMES else w for w in prompt.lower().split()]
            color = next((w for w in words if w in COLOR_NAMES), None)
            shape = next((w for w in words if w in SHAPE_NAMES), None)
            if color and shape:
                return self.names.index(f"{color} {shape}")
        elif prompt.strip().lower() in (lowered := [n.lower() for n in self.names]):
            return lowered.index(prompt.strip().lower())
        shown = ", ".join(self.names[:8]) + (f", ... ({len(self.names)} classes)" if len(self.names) > 8 else "")
        raise ValueError(f"prompt {prompt!r} names no class of this class-conditional model (classes: {shown})")

    def labels(self, prompts) -> tuple[int, ...]:
        return tuple(self.label(p) for p in prompts)

    def save(self, folder: Path) -> None:
        (folder / CLASSES_FILE).write_text(json.dumps({"names": list(self.names), "matching": self.matching}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> "ClassNames | None":
        path = folder / CLASSES_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(tuple(data["names"]), data["matching"])


def source_classes(source) -> ClassNames:
    """The classes of a data source block; DataError when it has none to offer."""
    if source.kind == "shapes":
        return ClassNames(SHAPES_CLASSES, "shapes")
    if source.kind == "imagefolder":
        from .sources import ImageFolder, listing

        folder = ImageFolder(source)
        if folder.unfiled:
            raise DataError(f"a class-conditional model reads each image's class from its subfolder, but "
                            f"{len(folder.unfiled)} image(s) lie directly in {folder.root}: {listing(folder.unfiled)}")
        return ClassNames(folder.classes, "name")
    raise DataError(f"a class-conditional model needs class labels, which a {source.kind} source does not give "
                    "(shapes, or an image folder with one subfolder per class, do)")
