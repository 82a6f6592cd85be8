"""Writes the demo image dataset `colours` (assets/datasets/colours.json and its images in colours/): solid colour
images of several sizes and shades, each asked about in Chinese or English, answered with the colour's name.

Deterministic (a fixed seed), so running it again writes the same files. The tests draw their held-out images with
`colour_image` from other seeds: shades and sizes the demo run never saw.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

# name -> (RGB, the Chinese answer, the English answer)
COLOURS = {
    "red": ((220, 30, 30), "红色。", "Red."),
    "green": ((30, 180, 40), "绿色。", "Green."),
    "blue": ((30, 50, 220), "蓝色。", "Blue."),
    "yellow": ((235, 215, 30), "黄色。", "Yellow."),
    "black": ((15, 15, 15), "黑色。", "Black."),
    "white": ((245, 245, 245), "白色。", "White."),
}
QUESTIONS_ZH = ("<image>这张图片是什么颜色？", "图中是什么颜色？<image>", "<image>请说出图片的颜色。")
QUESTIONS_EN = ("<image>What colour is this image?", "What colour do you see? <image>", "<image>Name the colour.")
PER_COLOUR = 8


def colour_image(name: str, rng: random.Random):
    """A solid image of colour `name`: its shade moved by up to 25 per channel, 28 to 64 pixels a side."""
    from PIL import Image

    base = COLOURS[name][0]
    shade = tuple(min(255, max(0, value + rng.randint(-25, 25))) for value in base)
    return Image.new("RGB", (rng.randint(28, 64), rng.randint(28, 64)), shade)


def rows_and_images(seed: int = 0) -> list[tuple[dict, str, object]]:
    rng = random.Random(seed)
    made = []
    for name, (_, answer_zh, answer_en) in COLOURS.items():
        for number in range(PER_COLOUR):
            file = f"colours/{name}_{number}.png"
            chinese = number % 2 == 0
            question = rng.choice(QUESTIONS_ZH if chinese else QUESTIONS_EN)
            answer = answer_zh if chinese else answer_en
            row = {"instruction": question, "input": "", "output": answer, "images": [file]}
            made.append((row, file, colour_image(name, rng)))
    rng.shuffle(made)
    return made


def main(folder: Path) -> None:
    (folder / "colours").mkdir(parents=True, exist_ok=True)
    rows = []
    for row, file, image in rows_and_images():
        image.save(folder / file, format="PNG", optimize=True)
        rows.append(row)
    text = "[\n" + ",\n".join("  " + json.dumps(row, ensure_ascii=False) for row in rows) + "\n]\n"
    (folder / "colours.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "core" / "assets" / "datasets"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
