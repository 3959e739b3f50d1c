"""The report in a real headless Chromium: browse, open, mark, download labels.csv, label.

Skipped only where Chromium, chromedriver or Selenium are missing (``.ci/run`` installs
them). The page is the report of a real sort of the 160 demo images.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from medsort.cli import main
from medsort.demo import demo_folder

pytest.importorskip("selenium")
from browser import console_errors, find_browser, start_chromium  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_browser() is None, reason="chromium/chromedriver not installed"),
]


@pytest.fixture(scope="module")
def sorted_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    images = root / "images"
    shutil.copytree(demo_folder(), images)
    out = root / "out"
    assert main(["sort", str(images), "--out", str(out), "--quiet", "--no-cache"]) == 0
    return out


@pytest.fixture
def page(sorted_out: Path, tmp_path: Path):  # noqa: ANN201
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_chromium(downloads)
    driver.get((sorted_out / "report.html").as_uri())
    _wait(lambda: driver.execute_script("return document.body.dataset.ready") == "1")
    yield driver, downloads
    driver.quit()


def _wait(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the page")
        time.sleep(0.05)


def _rows(block) -> list[int]:  # noqa: ANN001
    figures = block.find_elements(By.CSS_SELECTOR, "figure")
    return [int(f.get_attribute("data-row")) for f in figures]


def test_browse_open_mark_download_and_label(page, sorted_out: Path) -> None:  # noqa: ANN001
    driver, downloads = page
    table = pd.read_csv(sorted_out / "assignments.csv", keep_default_na=False)
    sizes = table["group"].value_counts()
    big = int(sizes.index[0])
    others = [int(g) for g in sizes.index[1:]]
    assert sizes[big] > 60, "the largest demo group should need more than one page"

    # Page through every image of the largest group, most typical first.
    block = driver.find_element(By.ID, f"group-{big}")
    seen = _rows(block)
    next_button = block.find_element(By.CSS_SELECTOR, '[data-act="next"]')
    while next_button.is_enabled():
        next_button.click()
        seen += _rows(block)
    expected = table.index[table["group"] == big].tolist()
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected)
    distances = table.loc[seen, "distance"].to_numpy()
    assert (distances[1:] >= distances[:-1]).all()

    # Open one image: the large view names its file, group and neighbours.
    first_other = driver.find_element(By.ID, f"group-{others[0]}")
    first_other.find_element(By.CSS_SELECTOR, "figure").click()
    viewer = driver.find_element(By.ID, "viewer")
    assert viewer.is_displayed()
    row = int(first_other.find_element(By.CSS_SELECTOR, "figure").get_attribute("data-row"))
    info = driver.find_element(By.ID, "v-info").text
    assert table.loc[row, "path"] in info and "distance to centre" in info
    assert driver.find_elements(By.CSS_SELECTOR, "#v-neighbours figure")
    driver.find_element(By.ID, "v-close").click()
    assert not viewer.is_displayed()

    # The whole largest group is one class; one image of each other group another.
    name = driver.find_element(By.ID, "class-name")
    name.send_keys("ultrasound")
    block.find_element(By.CSS_SELECTOR, '[data-act="mark-group"]').click()
    driver.find_element(By.ID, "mark-mode").click()
    singles = {}
    for group, label in zip(others[:2], ["xray-a", "xray-b"], strict=True):
        name.clear()
        name.send_keys(label)
        figure = driver.find_element(By.CSS_SELECTOR, f"#group-{group} figure")
        figure.click()
        singles[table.loc[int(figure.get_attribute("data-row")), "path"]] = label
    assert driver.find_element(By.ID, "mark-count").text.startswith(f"{sizes[big] + 2} images")

    # Marks survive a reload (localStorage).
    driver.refresh()
    _wait(lambda: driver.execute_script("return document.body.dataset.ready") == "1")
    assert driver.find_element(By.ID, "mark-count").text.startswith(f"{sizes[big] + 2} images")

    driver.find_element(By.ID, "download").click()
    target = downloads / "labels.csv"
    _wait(lambda: target.is_file() and target.stat().st_size > 0)
    labels = pd.read_csv(target, keep_default_na=False)
    assert list(labels.columns) == ["path", "label"]
    assert len(labels) == sizes[big] + 2
    assert set(labels["path"]) <= set(table["path"])
    assert console_errors(driver) == []

    # `medsort label` takes the file as is and predicts those classes.
    assert main(["label", str(sorted_out), "--labels", str(target), "--quiet"]) == 0
    predicted = pd.read_csv(sorted_out / "predictions.csv", keep_default_na=False)
    by_path = dict(zip(predicted["path"], predicted["label"], strict=True))
    assert {"ultrasound", "xray-a", "xray-b"} <= set(predicted["label"])
    for path, label in singles.items():
        assert by_path[path] == label
    in_big = predicted[table["group"].to_numpy() == big]
    assert (in_big["label"] == "ultrasound").mean() > 0.9

    # The rebuilt report shows each image's prediction in its large view.
    driver.refresh()
    _wait(lambda: driver.execute_script("return document.body.dataset.ready") == "1")
    assert not driver.find_element(By.ID, "mark-mode").is_selected()  # clicks open images
    driver.find_element(By.CSS_SELECTOR, f"#group-{others[0]} figure").click()
    assert "predicted xray-a (" in driver.find_element(By.ID, "v-info").text
    assert console_errors(driver) == []


def test_map_hover_click_and_group_highlight(page, sorted_out: Path) -> None:  # noqa: ANN001
    driver, _ = page
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element(By.ID, "map-canvas")
    driver.execute_script("arguments[0].scrollIntoView()", canvas)
    # Hover the first image's dot: the tip shows its thumbnail and file.
    x, y = driver.execute_script(
        "var D=JSON.parse(document.getElementById('medsort-data').textContent);"
        "var b=arguments[0].getBoundingClientRect();"
        "return [(16+D.items.x[0]*608)*b.width/640-b.width/2,"
        "(624-D.items.y[0]*608)*b.height/640-b.height/2];",
        canvas,
    )
    ActionChains(driver).move_to_element_with_offset(canvas, int(x), int(y)).perform()
    tip = driver.find_element(By.ID, "map-tip")
    _wait(tip.is_displayed)
    assert tip.find_elements(By.TAG_NAME, "img")
    ActionChains(driver).click().perform()
    assert driver.find_element(By.ID, "viewer").is_displayed()
    driver.find_element(By.ID, "v-close").click()
    legend = driver.find_element(By.CSS_SELECTOR, "#legend button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", legend)
    legend.click()
    assert "on" in legend.get_attribute("class")
    assert console_errors(driver) == []


def test_move_an_image_to_another_group(page, sorted_out: Path) -> None:  # noqa: ANN001
    driver, downloads = page
    table = pd.read_csv(sorted_out / "assignments.csv", keep_default_na=False)
    sizes = table["group"].value_counts()
    source, target = int(sizes.index[-1]), int(sizes.index[0])
    driver.find_element(By.ID, "class-name").send_keys("benign")
    target_block = driver.find_element(By.ID, f"group-{target}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target_block)
    target_block.find_element(By.CSS_SELECTOR, '[data-act="mark-group"]').click()
    figure = driver.find_element(By.CSS_SELECTOR, f"#group-{source} figure")
    row = int(figure.get_attribute("data-row"))
    figure.click()
    Select(driver.find_element(By.ID, "v-move")).select_by_value(str(target))
    assert f"moved from group {source}" in driver.find_element(By.ID, "v-info").text
    driver.find_element(By.ID, "v-close").click()
    size_text = driver.find_element(By.CSS_SELECTOR, f"#group-{source} .group-size").text
    assert size_text == f"({sizes[source] - 1} images)"
    # The moved image takes the class of the group it went to.
    driver.find_element(By.ID, "download").click()
    labels_csv = downloads / "labels.csv"
    _wait(lambda: labels_csv.is_file() and labels_csv.stat().st_size > 0)
    labels = pd.read_csv(labels_csv, keep_default_na=False)
    assert len(labels) == sizes[target] + 1
    assert labels.set_index("path")["label"][table["path"][row]] == "benign"
    assert console_errors(driver) == []
