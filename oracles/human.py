"""A person as the oracle: what each form asks and shows, and the ledger of answers.

Every label a person gives comes through a form in the Prefect UI (``oracles/forms.py``
builds it and waits: paused on the command line, suspended as a deployment's run). A
form shows what to label: the points with their features in the data's own units, the
model's guess where there is a model, and a map of the model's uncertainty with the
points starred (no true boundaries). Every answer is in the experiment's ledger
(``answers.jsonl``) before it is used, so a replayed or re-run experiment never asks
again for what is there.
"""

from pathlib import Path

import numpy as np

from alcore import stages as st
from alcore import strategies
from alcore.config import ExperimentConfig
from alcore.data import Data
from oracles import forms
from store.ledger import AnswerBook, accepted_guesses, resolve
from tasks import maps, plots


class HumanOracle:
    """Asks a person, form by form; answers come from the ledger where it has them."""

    def __init__(self, config: ExperimentConfig, folder: Path, log):
        self.config = config
        self.folder = folder
        self.log = log
        self.book = AnswerBook(folder / "answers.jsonl")
        answers = self.book.read()
        for message in self.book.warnings:
            log.warning(message)
        if answers:  # said once: the forms they answer are not asked (nor logged as waiting) again
            log.info(
                "restored %d answer(s) (%d labels) from %s: those forms are not asked again",
                len(answers),
                sum(len(a.points) for a in answers),
                self.book.path,
            )

    @property
    def warnings(self) -> list[str]:
        return self.book.warnings

    # ------------------------------------------------------------ before the rounds
    def label_data(self, drawn: Data) -> tuple[list[int], list[int]]:
        """The initial and the calibration points, one form each."""
        out = []
        for ask, points, what in (
            ("initial", drawn.x_initial, f"the {len(drawn.x_initial)} initial training points"),
            ("calibration", drawn.x_calibration, f"the {len(drawn.x_calibration)} held-out calibration points"),
        ):
            out.append(self._points_answered(drawn, ask, points, what))
        return out[0], out[1]

    def label_passive(self, data: Data, points: np.ndarray) -> list[int]:
        """The passive baseline's points, one form (their items found by their pool
        indices: the tutorial's are drawn on the square, and have none)."""
        pool = st.passive_indices(self.config, data)
        what = f"the passive baseline's {len(points)} points"
        return self._points_answered(data, "passive", points, what, pool=pool)

    def _points_answered(
        self, data: Data, ask: str, points: np.ndarray, what: str, pool: np.ndarray | None = None
    ) -> list[int]:
        if len(points) == 0:  # nothing to ask (marglik calibration holds out no points): no form
            return []
        answers = self.book.for_ask(ask)
        answer = answers[-1] if answers else self._ask_points(data, ask, points, what, pool)
        return [answer.labels[i] for i in range(len(points))]

    def _items(self, data: Data, where: str, indices, points: np.ndarray, stem: str) -> str:
        """The items themselves, for the form, each under its field's name: pictures
        (the digits' images; a data file's image column), a data file's text column,
        and every feature with its name in a compact table (the tutorial's two
        coordinates are in the form's point table already)."""
        parts = []
        titles = [f"point_{n}" for n in range(1, len(points) + 1)]
        items = data.items
        shape = items.image_shape if items is not None else ()
        if shape and int(np.prod(shape)) == data.n_features:
            images = [data.raw(p).reshape(shape) for p in points]
            png = plots.items_plot(self.folder / "forms" / f"{stem}-items.png", images, titles)
            parts.append(f"The item{'s' if len(points) > 1 else ''} to label:\n\n{forms.image_markdown(png, 'items')}")
        values = data.item_values(where, indices) if where else None
        if values and items.kind == "image":
            png = plots.items_plot(self.folder / "forms" / f"{stem}-items.png", [_picture(v) for v in values], titles)
            parts.append(f"The {items.column} of each point:\n\n{forms.image_markdown(png, items.column)}")
        elif values:
            rows = "\n".join(f"| {t} | {_cell(v)} |" for t, v in zip(titles, values, strict=True))
            parts.append(f"| field | {_cell(items.column)} |\n|---|---|\n{rows}")
        named = items is not None and len(items.feature_names) == data.n_features
        if not shape and (named or data.n_features > 4):  # else the point table shows them all
            names = data.feature_names()
            header = "| field | " + " | ".join(_cell(n) for n in names) + " |\n|---|" + "---|" * len(names)
            raw = data.raw(points)
            rows = "\n".join(
                f"| {t} | " + " | ".join(f"{v:.4g}" for v in r) + " |" for t, r in zip(titles, raw, strict=True)
            )
            parts.append(f"Every feature, in the data's own units:\n\n{header}\n{rows}")
        return "\n\n".join(parts)

    def _ask_points(self, data: Data, ask: str, points: np.ndarray, what: str, pool: np.ndarray | None = None):
        described = [data.describe(p) for p in points]

        def body() -> str:  # drawn only when the form is shown
            path = self.folder / "forms" / f"{ask}.png"
            png = maps.for_data(data).points(path, points, f"{len(points)} points to label")
            rows = "\n".join(f"| point_{n} | {text} |" for n, text in enumerate(described, start=1))
            if pool is not None:  # points of the pool (the passive baseline's)
                items = self._items(data, "pool", pool, points, ask)
            else:
                where = ask if ask in ("initial", "calibration") else ""
                items = self._items(data, where, range(len(points)), points, ask)
            return (
                f"Label {what}: choose the class of every point.\n\n"
                + (f"{items}\n\n" if items else "")
                + f"Where the points are (numbered as the fields):\n\n{forms.image_markdown(png, ask)}\n\n"
                f"| field | point |\n|---|---|\n{rows}\n"
            )

        return forms.ask(
            self.book,
            ask=ask,
            title=f"{what} of experiment {self.folder.name}",
            points=[
                (i, [float(v) for v in p], text) for i, (p, text) in enumerate(zip(points, described, strict=True))
            ],
            classes=list(data.classes),
            body=body,
            wait_seconds=self.config.label_wait_seconds,
            hold_seconds=self.config.label_hold_seconds,
            allow_skip=False,
            allow_stop=False,
        )

    # ------------------------------------------------------------ the rounds
    def excluded(self) -> list[int]:
        return self.book.skipped()

    def accepted_guesses(self) -> dict[str, list[int]]:
        return accepted_guesses(self.book.read())

    def stops_after(self, r: int) -> bool:
        return any(a.stop for a in self.book.for_ask(f"round-{r:03d}"))

    def label_round(self, r: int, data: Data, acquired: st.Acquired, context) -> dict[int, int] | None:
        """The round's labels from the ledger, or from a form for the points it lacks;
        None when the person could not label some (they are then excluded)."""
        ask = f"round-{r:03d}"
        labels = resolve(self.book.for_ask(ask), acquired.indices)
        missing = [i for i in acquired.indices if i not in labels]
        if not missing:
            return labels
        answer = self._ask_round(r, data, acquired, missing, context)
        if answer.skipped:
            return None
        return resolve(self.book.for_ask(ask), acquired.indices)

    def _ask_round(self, r: int, data: Data, acquired: st.Acquired, missing: list[int], context):
        probs = st.class_probabilities(context.params, data.pool[missing])
        rows = []
        points = []
        guesses = [int(np.argmax(p)) for p in probs]
        for n, (i, p, g) in enumerate(zip(missing, probs, guesses, strict=True), start=1):
            where = data.describe_candidate(i)
            guess = f"{data.classes[g]} ({100 * np.max(p):.0f} %)"
            rows.append(f"| point_{n} | {where} | {guess} |")
            points.append((i, data.pool[i].tolist(), f"{where}; pre-filled with the model's guess, {guess}"))

        def body() -> str:  # drawn only when the form is shown
            items = self._items(data, "pool", missing, data.pool[missing], f"round-{r:03d}")
            png = self._form_map(r, data, acquired, missing, context)
            return (
                (f"{items}\n\n" if items else "")
                + "The model's uncertainty over the candidates; the point(s) to label are starred.\n\n"
                f"{forms.image_markdown(png, f'round {r}')}\n\n"
                "| field | point | the model's guess |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
                "Each select is pre-filled with the model's guess: *Resume* as it is accepts them all; change the "
                f"ones you disagree with. Choose *{forms.CANNOT_LABEL}* for a point you cannot label (it is then "
                "never proposed again and the next best point is asked instead). *Stop after this round* ends the "
                "loop after this round."
            ) + stop_rule_note(context)

        return forms.ask(
            self.book,
            ask=f"round-{r:03d}",
            title=f"Round {r} of {context.rounds}, {len(missing)} point{'s' if len(missing) > 1 else ''}",
            points=points,
            classes=list(data.classes),
            body=body,
            wait_seconds=self.config.label_wait_seconds,
            hold_seconds=self.config.label_hold_seconds,
            allow_skip=True,
            allow_stop=True,
            guesses=guesses,
        )

    def _form_map(self, r: int, data: Data, acquired: st.Acquired, missing: list[int], context):
        """The uncertainty map with the points to label starred (no true boundaries)."""
        path = self.folder / "forms" / f"round-{r:03d}.png"
        title = f"Round {r}: {self.config.acquisition} scores; label the starred point(s)"
        picks = data.pool[missing]
        x, y = context.x_labelled, context.y_labelled
        quantity = strategies.get(self.config.acquisition).quantity
        return maps.for_data(data).uncertainty(
            path, acquired.preds, acquired.scores, x, y, picks, title, quantity=quantity, form=True
        )


def _picture(path: str, size: int = 256) -> np.ndarray:
    """An image file as an RGB array, at most ``size`` pixels a side (for the form)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        return np.asarray(image)


def _cell(text: str, limit: int = 200) -> str:
    """Text for a markdown table cell: one line, no column breaks, at most ``limit`` characters."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stop_rule_note(context) -> str:
    """The stop rule's one line under a round's form (alcore/stopping.py), if known."""
    line = getattr(context, "stop_line", None)
    return f"\n\n*When to stop:* {line}." if line else ""
