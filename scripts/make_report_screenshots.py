"""Screenshots of the report's main views, from the demo, into ``docs/images/``.

Sorts the bundled demo images, opens the report in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, Selenium) and saves: the top of the page, the map
with a hovered image, a group's gallery with review marks, the large view, and a lasso
selection (256-colour PNGs, to keep the repository small).

Usage::

    python scripts/make_report_screenshots.py [--out docs/images] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import console_errors, start_chromium  # noqa: E402
from PIL import Image  # noqa: E402

from medsort.demo import demo_folder  # noqa: E402
from medsort.pipeline import sort_folder  # noqa: E402
from medsort.sorter import Sorter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="medsort_shots_"))
    images = work / "demo-images"
    if not images.is_dir():
        shutil.copytree(demo_folder(), images)
    report = sort_folder(images, work / "demo-out", Sorter(progress=False)) / "report.html"
    args.out.mkdir(parents=True, exist_ok=True)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = start_chromium(width=1400, height=1000)
    try:
        driver.get(report.as_uri())
        while driver.execute_script("return document.body.dataset.ready") != "1":
            time.sleep(0.05)

        def shot(name: str) -> None:
            time.sleep(0.4)  # let lazy thumbnails load
            target = args.out / f"report-{name}.png"
            driver.save_screenshot(str(target))
            with Image.open(target) as image:
                small = image.convert("RGB").quantize(256)
            small.save(target, optimize=True)
            print(args.out / f"report-{name}.png")

        def scroll_to(element) -> None:  # noqa: ANN001
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)

        shot("overview")
        canvas = driver.find_element(By.ID, "map-canvas")
        scroll_to(driver.find_element(By.ID, "map"))
        x, y = driver.execute_script(
            "var D=JSON.parse(document.getElementById('medsort-data').textContent);"
            "var b=arguments[0].getBoundingClientRect();"
            "var d=function(i){return Math.abs(D.items.x[i]-0.8)+Math.abs(D.items.y[i]-0.7);};"
            "var best=0;D.items.x.forEach(function(x,i){if(d(i)<d(best))best=i;});"
            "return [(16+D.items.x[best]*608)*b.width/640-b.width/2,"
            "(624-D.items.y[best]*608)*b.height/640-b.height/2];",
            canvas,
        )
        ActionChains(driver).move_to_element_with_offset(canvas, int(x), int(y)).perform()
        shot("map")

        name = driver.find_element(By.ID, "class-name")
        name.send_keys("benign")
        block = driver.find_element(By.CSS_SELECTOR, ".group")
        scroll_to(block)
        block.find_element(By.CSS_SELECTOR, '[data-act="mark-group"]').click()
        driver.find_element(By.ID, "mark-mode").click()
        name.clear()
        name.send_keys("malignant")
        for figure in block.find_elements(By.CSS_SELECTOR, "figure")[12:15]:
            figure.click()
        driver.find_element(By.ID, "mark-mode").click()
        scroll_to(block)
        shot("gallery")

        block.find_elements(By.CSS_SELECTOR, "figure")[1].click()
        shot("viewer")
        driver.find_element(By.ID, "v-close").click()

        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", canvas)
        box = canvas.size
        w, h = box["width"], box["height"]
        chain = ActionChains(driver).move_to_element_with_offset(canvas, -w // 2 + 8, -h // 2 + 8)
        chain.click_and_hold()
        for fx, fy in [(0.2, 0.0), (0.4, 0.02), (0.45, 0.6), (0.02, 0.6), (0.01, 0.03)]:
            chain.move_to_element_with_offset(canvas, int((fx - 0.5) * w), int((fy - 0.5) * h))
        chain.release().perform()
        shot("lasso")
        errors = console_errors(driver)
    finally:
        driver.quit()
    if errors:
        raise SystemExit(f"console errors: {errors}")


if __name__ == "__main__":
    main()
