"""The demo app in a real headless browser (Debian's chromium and chromium-driver through selenium; nothing is
downloaded): `python -m otseg_hf.app` is started on 127.0.0.1, an image is uploaded, labels are typed, and the
result image and the area table are checked; a screenshot is saved. Also the Space folder of `otseg-export --space`.
Skips, saying why, where gradio, selenium or chromium is missing (`.ci/run` installs them)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from otseg_hf.app.drawing import palette
from otseg_hf.world.scenes import WorldScenes
from otseg_hf.world.splits import WORLD_OTSEG_DIR

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_DIR = Path(os.environ.get("OTSEG_SCREENSHOT_DIR", ROOT / "outputs" / "screenshots"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer at {url} within {timeout} s")


def _image_from_src(src: str) -> PIL.Image.Image:
    if src.startswith("data:"):
        return PIL.Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    with urllib.request.urlopen(src, timeout=10) as response:
        return PIL.Image.open(io.BytesIO(response.read()))


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio", reason='the app needs gradio: pip install -e ".[app]"')
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install selenium")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no chromium/chromedriver on PATH: apt-get install -y chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "otseg_hf.app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_app_segments_an_uploaded_image_in_a_browser(browser, app_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.monotonic()
    # an image of the world with known classes (upscaled so that the page shows it)
    world = WorldScenes(image_size=64)
    image, label = world.generate(3, seed=5)
    picture = PIL.Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((128, 128), PIL.Image.NEAREST)
    upload = tmp_path / "upload.png"
    picture.save(upload)
    present, counts = np.unique(label[label != 255], return_counts=True)
    largest = world.class_names[int(present[np.argmax(counts)])]
    labels = [*(world.class_names[int(i)] for i in present), "blue square"]  # the image's classes and one more

    browser.get(app_url)
    wait = WebDriverWait(browser, 120)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#image input[type=file]")))
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(upload))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#image img")))
    box = browser.find_element(By.CSS_SELECTOR, "#labels textarea")
    box.clear()
    box.send_keys(", ".join(labels))
    browser.find_element(By.CSS_SELECTOR, "#segment").click()
    result = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#result img")))
    wait.until(lambda _: any(name in browser.find_element(By.CSS_SELECTOR, "#areas").text for name in labels))
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT_DIR / "app.png"))

    shown = _image_from_src(result.get_attribute("src")).convert("RGB")
    # the overlay is the uploaded image plus a legend at its right, coloured with the labels' palette colours
    assert shown.height >= picture.height and shown.width > picture.width
    pixels = np.asarray(shown)[: picture.height, : picture.width].astype(float)
    original = np.asarray(picture, dtype=float)
    colors = palette(len(labels)).astype(float)
    blended = [0.5 * original + 0.5 * color for color in colors]  # alpha 0.5: every pixel is one of these
    error = np.min([np.abs(pixels - b).max(axis=-1) for b in blended], axis=0)
    assert np.mean(error <= 2) > 0.99
    areas = browser.find_element(By.CSS_SELECTOR, "#areas").text
    assert largest in areas  # the shipped model finds the image's largest object
    print(f"app test: {time.monotonic() - started:.1f} s in the browser")


def test_space_folder(tmp_path):
    pytest.importorskip("gradio", reason='the Space README names the gradio version: pip install -e ".[app]"')
    from otseg_hf.cli.export import main as export_main

    export_main([str(WORLD_OTSEG_DIR), str(tmp_path / "hub"), "--space", str(tmp_path / "space")])
    space = tmp_path / "space"
    assert {"app.py", "drawing.py", "requirements.txt", "README.md", "model"} <= {p.name for p in space.iterdir()}
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert "gradio" in (space / "requirements.txt").read_text()
    assert (space / "model" / "model.safetensors").is_file() and (space / "model" / "README.md").is_file()
    # the Space's app runs without otseg_hf: app.py imports drawing.py beside it and loads model/ with its code
    probe = (
        "import sys; sys.modules['otseg_hf'] = None\n"  # otseg_hf cannot be imported
        "import app, PIL.Image, numpy as np\n"
        "pipe = app.load_segmenter('model')\n"
        "image = PIL.Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 200)\n"
        "picture, areas = app.segment(pipe, image, 'red circle, blue square')\n"
        "assert picture.width > 64 and abs(sum(a for _, a in areas) - 100) < 0.5, areas\n"
        "print('space ok')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=space, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 0 and "space ok" in done.stdout, done.stderr[-3000:]
    with pytest.raises(ValueError, match="exists already"):
        export_main([str(WORLD_OTSEG_DIR), str(tmp_path / "hub2"), "--space", str(space)])
    assert not (tmp_path / "hub2").exists()
