"""The web page in a real Chromium (Debian's, driven by Selenium) against a real
`python -m service` on a small synthetic catalogue: upload and recording through the fake
microphone, playing a similar track, every error message, catalogue writes with the key.

Screenshots of the main states go to the test's temporary folder (and to
$SINGER_SCREENSHOT_DIR when set, which is how docs/screenshot-*.png are made).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.live import (
    API_KEY,
    ServiceProcess,
    add_clip,
    free_port,
    make_clip,
    singer_name,
)
from tests.support.synth import VOICES, write

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
QUERY_VOICE = 2
WAIT_S = 60
DESKTOP, PHONE = (1280, 1000), (390, 900)

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (dev extra)"
)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("web-audio")
    catalogue = [
        make_clip(d, v, dom, s)
        for v in range(len(VOICES))
        for dom in ("mono", "mixed")
        for s in ((0, 1) if dom == "mono" else (0,))
    ]
    rng = np.random.default_rng(0)
    return {
        "catalogue": catalogue,
        "gone": make_clip(d, 3, "mixed", 9),
        "query": make_clip(d, QUERY_VOICE, "mono", 5).path,
        "microphone": make_clip(d / "mic", QUERY_VOICE, "mono", 6).path,
        "new": make_clip(d / "new", 1, "mono", 8).path,
        "short": make_clip(d / "short", 0, "mono", 3, seconds=1.0).path,
        "silent": write(d / "silent.wav", np.zeros(22050 * 5, np.float32)),
        "text": _text_file(d / "notes.wav"),
        "large": write(d / "large.wav", 0.1 * rng.standard_normal(22050 * 60).astype(np.float32)),
    }


def _text_file(path: Path) -> Path:
    path.write_text("these are lyrics, not audio\n" * 50)
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_checkpoint, clips):
    """`python -m service` with a 1-MiB upload limit, filled over HTTP."""
    cwd = tmp_path_factory.mktemp("web-service")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "SINGER_PORT": str(port),
        "SINGER_INDEX_DIR": str(cwd / "index"),
        "SINGER_CHECKPOINT": str(random_checkpoint),
        "SINGER_DEVICE": "cpu",
        "SINGER_API_KEY": API_KEY,
        "SINGER_MAX_UPLOAD_MB": "1",
        "SINGER_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": "1",
    }
    proc = ServiceProcess([sys.executable, "-m", "service"], env, port, cwd).start()
    try:
        import httpx

        with httpx.Client(base_url=proc.url, timeout=60) as client:
            for clip in clips["catalogue"]:
                add_clip(client, clip)
            gone = add_clip(client, clips["gone"])
        # The stored upload of this track disappears: the page must not offer to play it.
        for stored in (cwd / "index" / "audio").glob(f"{gone['content_hash']}.*"):
            stored.unlink()
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def browser(clips):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={clips['microphone']}",
        "--autoplay-policy=no-user-gesture-required",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, service):
    browser.set_window_size(*DESKTOP)
    browser.get(service.url + "/")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#singers-table tbody tr"))
    return browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def wait(driver, seconds: float = WAIT_S) -> WebDriverWait:
    return WebDriverWait(driver, seconds)


def screenshot(driver, shots: Path, name: str, full_page: bool = True) -> Path:
    """Full-height screenshot `name`.png; copied to $SINGER_SCREENSHOT_DIR when set."""
    width = driver.get_window_size()["width"]
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height + 140, 3000))
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("SINGER_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["SINGER_SCREENSHOT_DIR"]) / path.name)
    return path


def query(driver, path: Path, domain: str = "mono") -> None:
    driver.find_element(By.ID, "query-file").send_keys(str(path))
    driver.find_element(By.CSS_SELECTOR, f"input[name=domain][value={domain}]").click()
    submit(driver)


def submit(driver) -> None:
    button = driver.find_element(By.ID, "query-submit")
    wait(driver, 10).until(lambda d: button.is_enabled())
    click(driver, button)


def click(driver, element) -> None:
    """Click after scrolling to the middle of the view (the sticky player covers the bottom)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def ranked_singers(driver) -> list[str]:
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#singer-list li[data-singer]"))
    return [
        li.get_attribute("data-singer")
        for li in driver.find_elements(By.CSS_SELECTOR, "#singer-list li[data-singer]")
    ]


def test_upload_shows_the_right_singer_first_and_similar_tracks(page, clips, shots):
    query(page, clips["query"])
    assert ranked_singers(page)[0] == singer_name(QUERY_VOICE)
    tracks = page.find_elements(By.CSS_SELECTOR, "#track-list li[data-track-id]")
    assert len(tracks) == 10
    assert page.find_element(By.ID, "query-error").get_attribute("hidden")
    screenshot(page, shots, "screenshot-desktop")
    page.set_window_size(*PHONE)
    # At phone width nothing is wider than the screen.
    assert page.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    screenshot(page, shots, "screenshot-phone")


def test_similar_track_plays(page, clips):
    query(page, clips["query"])
    ranked_singers(page)
    click(page, page.find_element(By.CSS_SELECTOR, "#track-list li[data-track-id] button.play"))
    player = page.find_element(By.ID, "player")
    wait(page).until(lambda d: d.execute_script("return arguments[0].currentTime > 0", player))
    assert player.get_attribute("src").endswith("/audio")
    assert page.execute_script("return arguments[0].error", player) is None


def test_recording_through_the_fake_microphone(page, shots):
    page.find_element(By.ID, "record-button").click()
    meter = page.find_element(By.ID, "level")
    wait(page, 20).until(lambda d: float(meter.get_attribute("value")) > 0.01)
    wait(page, 30).until(lambda d: d.find_element(By.ID, "timer").text >= "0:06")
    screenshot(page, shots, "recording", full_page=False)
    page.find_element(By.ID, "record-button").click()
    ready = page.find_element(By.ID, "query-ready")
    wait(page, 20).until(lambda d: "Recording ready" in ready.text)
    assert "audio/webm" in ready.text  # what Chromium records: webm/Opus, decoded by PyAV
    submit(page)
    singers = ranked_singers(page)
    assert sorted(singers) == [singer_name(v) for v in range(len(VOICES))]
    assert page.find_element(By.ID, "query-error").get_attribute("hidden")
    screenshot(page, shots, "recorded-answer")


@pytest.mark.parametrize(
    ("clip", "code", "advice"),
    [
        ("short", "audio_too_short", "Record a longer take"),
        ("silent", "no_voiced_segment", "Sing closer to the microphone"),
        ("text", "unsupported_format", "Choose an audio file"),
        ("large", "upload_too_large", "The limit is 1 MB"),
    ],
)
def test_error_messages_say_what_to_do(page, clips, shots, clip, code, advice):
    query(page, clips[clip])
    box = page.find_element(By.ID, "query-error")
    wait(page).until(lambda d: box.is_displayed())
    assert box.get_attribute("data-code") == code
    assert advice in box.text
    assert box.get_attribute("role") == "alert"
    screenshot(page, shots, f"error-{code}", full_page=False)


def test_catalogue_shows_a_gone_file_without_play_button(page):
    click(
        page, page.find_element(By.CSS_SELECTOR, "#singers-table tr[data-singer=singer-3] button")
    )
    wait(page).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#singer-tracks li")) == 4)
    items = {
        li.find_element(By.CSS_SELECTOR, ".name").text: li
        for li in page.find_elements(By.CSS_SELECTOR, "#singer-tracks li")
    }
    gone = items.pop("singer-3-mixed-9")
    assert not gone.find_elements(By.CSS_SELECTOR, "button.play")
    assert "audio not available: the uploaded audio was not kept" in gone.text
    assert all(li.find_elements(By.CSS_SELECTOR, "button.play") for li in items.values())


def test_add_and_delete_a_track_with_the_key(page, clips, shots):
    def add():
        page.find_element(By.ID, "add-file").send_keys(str(clips["new"]))
        page.find_element(By.ID, "add-singer").send_keys("Newcomer")
        page.find_element(By.ID, "add-title").send_keys("First take")
        Select(page.find_element(By.ID, "add-domain")).select_by_value("mono")
        click(page, page.find_element(By.ID, "add-submit"))

    error = page.find_element(By.ID, "catalogue-error")
    add()  # no key yet
    wait(page).until(lambda d: error.is_displayed())
    assert error.get_attribute("data-code") == "unauthorized"
    assert page.switch_to.active_element.get_attribute("id") == "api-key"
    page.find_element(By.ID, "api-key").send_keys(API_KEY)
    assert page.execute_script("return sessionStorage.getItem('singer-api-key')") == API_KEY
    assert page.execute_script("return localStorage.length") == 0
    page.find_element(By.ID, "add-file").clear()
    page.find_element(By.ID, "add-singer").clear()
    page.find_element(By.ID, "add-title").clear()
    add()
    status = page.find_element(By.ID, "catalogue-status")
    wait(page).until(lambda d: "Added" in status.text)
    wait(page).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#singers-table tr[data-singer=Newcomer]"))
    )
    item = page.find_element(By.CSS_SELECTOR, "#singer-tracks li[data-track-id]")
    assert item.find_element(By.CSS_SELECTOR, ".name").text == "First take"
    screenshot(page, shots, "catalogue-added")
    click(page, item.find_element(By.CSS_SELECTOR, "button.delete"))
    page.switch_to.alert.accept()
    wait(page).until(lambda d: "Deleted" in status.text)
    wait(page).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#singers-table tr[data-singer=Newcomer]")
    )
    # The key survives a reload of the tab (sessionStorage), so a second write needs no typing.
    page.refresh()
    assert page.find_element(By.ID, "api-key").get_attribute("value") == API_KEY


def test_evidence_fields_are_rendered_when_present(page, shots):
    """The answer of a service with calibration and per-segment evidence (contract 4):
    verdict, confidences, quality and the coloured time bar."""
    answer = {
        "duration_s": 12.0,
        "n_segments": 3,
        "verdict": "known",
        "calibrated": True,
        "quality": {
            "voiced_fraction": 0.8,
            "n_segments": 3,
            "flags": ["clipped"],
            "domain_score": 0.1,
        },
        "singers": [
            {"name": "singer-2", "score": 0.9, "confidence": 0.87},
            {"name": "singer-0", "score": 0.7, "confidence": 0.1},
        ],
        "segments": [
            {"start_s": 0.0, "end_s": 3.0, "singer": "singer-2", "score": 0.9},
            {"start_s": 3.0, "end_s": 6.0, "singer": "singer-0", "score": 0.6},
            {"start_s": 9.0, "end_s": 12.0, "singer": "singer-2", "score": 0.8},
        ],
    }
    page.execute_script("renderAnswer(arguments[0], {tracks: []})", answer)
    assert page.find_element(By.ID, "verdict").text == "Most likely singer-2 (confidence 87%)."
    assert "confidence 87%" in page.find_element(By.CSS_SELECTOR, "#singer-list li").text
    assert "clipped" in page.find_element(By.ID, "quality").text
    bars = page.find_elements(By.CSS_SELECTOR, "#timebar div")
    assert [b.get_attribute("data-singer") for b in bars] == ["singer-2", "singer-0", "singer-2"]
    left = [page.execute_script("return arguments[0].style.left", b) for b in bars]
    assert left == ["0%", "25%", "75%"]
    colours = [b.value_of_css_property("background-color") for b in bars]
    assert colours[0] == colours[2] != colours[1]
    screenshot(page, shots, "evidence", full_page=False)
    answer["verdict"] = "unknown"
    page.execute_script("renderAnswer(arguments[0], {tracks: []})", answer)
    # 3 segments (9 s of singing): the page suggests a longer recording
    assert page.find_element(By.ID, "verdict").text == (
        "Probably none of the catalogue's singers. "
        "A longer recording (30 s of singing or more) would give a surer answer."
    )
    answer["n_segments"] = 12
    page.execute_script("renderAnswer(arguments[0], {tracks: []})", answer)
    assert page.find_element(By.ID, "verdict").text == "Probably none of the catalogue's singers."
    # A service that says how much singing it heard and how much a firm answer needs
    # (singing_s, firm_answer_s) and answers "likely" at its looser operating point.
    answer.update(verdict="likely", singing_s=9.0, firm_answer_s=18.0, n_segments=3)
    page.execute_script("renderAnswer(arguments[0], {tracks: []})", answer)
    verdict = page.find_element(By.ID, "verdict")
    assert verdict.text == (
        "Perhaps singer-2 (confidence 87%), not certain. Heard 9 s of singing; a firm answer "
        "needs about 18 s: a longer recording may settle it."
    )
    assert verdict.get_attribute("data-verdict") == "likely"
    screenshot(page, shots, "verdict-likely", full_page=False)
    answer.update(verdict="known", singing_s=24.0)
    page.execute_script("renderAnswer(arguments[0], {tracks: []})", answer)
    assert verdict.text == (
        "Most likely singer-2 (confidence 87%). Heard 24 s of singing (a firm answer needs "
        "about 18 s)."
    )
    answer.update(verdict="unknown", firm_answer_s=None)
    page.execute_script("renderAnswer(arguments[0], {tracks: []})", answer)
    assert verdict.text == "Probably none of the catalogue's singers. Heard 24 s of singing."


def test_a_domain_mismatch_offers_to_ask_again_as_the_other_kind(page, clips, shots):
    """A vocal take the detector hears as a voice with accompaniment: the page says so, and
    its button asks again as a finished song (the same file, `domain=mixed`, both requests)."""
    query(page, clips["query"])
    ranked_singers(page)
    page.execute_script(
        """window.sent = [];
           const post = postForm;
           postForm = (url, form, ...rest) => {
             window.sent.push([url, form.get("domain")]);
             return post(url, form, ...rest);
           };
           renderQuality({voiced_fraction: 0.9, n_segments: 4, domain_score: 0.8,
                          flags: ["mostly_accompaniment", "domain_mismatch"]}, "mono");"""
    )
    box = page.find_element(By.ID, "quality")
    assert "asking as a finished song may match it better" in box.text
    click(page, page.find_element(By.ID, "ask-again"))
    wait(page).until(lambda d: len(d.execute_script("return window.sent")) == 2)
    assert sorted(page.execute_script("return window.sent")) == [
        ["/identify", "mixed"],
        ["/search", "mixed"],
    ]
    assert page.find_element(By.CSS_SELECTOR, "input[name=domain][value=mixed]").is_selected()
    # The service's own answer replaces the stand-in: the take, a voice alone, asked as a
    # song, is flagged the other way, and the page offers the way back.
    wait(page).until(lambda d: "as a vocal take" in d.find_element(By.ID, "quality").text)
    assert page.find_element(By.ID, "ask-again").text == "Ask again as a vocal take"
    assert ranked_singers(page)[0] == singer_name(QUERY_VOICE)
    screenshot(page, shots, "ask-again")
    # No mismatch, no button.
    page.execute_script(
        "renderQuality({voiced_fraction: 1, n_segments: 4, domain_score: 0.1, flags: []}, 'mono')"
    )
    assert not page.find_elements(By.ID, "ask-again")
    # "Not sure": the service chooses, and the page says what it heard (a voice alone).
    page.execute_script("window.sent = []")
    click(page, page.find_element(By.CSS_SELECTOR, "input[name=domain][value=auto]"))
    click(page, page.find_element(By.ID, "query-submit"))
    wait(page).until(lambda d: "Heard as a vocal take." in d.find_element(By.ID, "quality").text)
    assert sorted(page.execute_script("return window.sent")) == [
        ["/identify", "auto"],
        ["/search", "auto"],
    ]
    assert not page.find_elements(By.ID, "ask-again")
    assert ranked_singers(page)[0] == singer_name(QUERY_VOICE)
    screenshot(page, shots, "auto")


def test_every_control_has_a_label_and_is_reachable_by_keyboard(page):
    unlabelled = page.execute_script(
        """return [...document.querySelectorAll('input, select, button, meter, audio')]
             .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                            && !e.getAttribute('aria-labelledby')
                            && !e.textContent.trim() && e.type !== 'radio')
             .map((e) => e.outerHTML)"""
    )
    assert unlabelled == []
    radios = page.execute_script(
        "return [...document.querySelectorAll('input[type=radio]')]"
        ".every((e) => e.closest('label'))"
    )
    assert radios
    # Tab from the skip link reaches the record button and the file chooser, in reading order.
    page.execute_script("document.querySelector('a.skip').focus()")
    reached = []
    for _ in range(12):
        ActionChains(page).send_keys(Keys.TAB).perform()
        reached.append(page.switch_to.active_element.get_attribute("id"))
    assert "record-button" in reached and "query-file" in reached, reached
    assert reached.index("record-button") < reached.index("query-file")


def test_api_docs_render_without_internet(browser, service):
    """Swagger UI's scripts come from the service itself (the browser has no internet)."""
    browser.get(service.url + "/docs")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/identify", "/search", "/tracks/{track_id}/audio"} <= paths


@pytest.fixture(scope="module")
def symlinked_service(tmp_path_factory, random_checkpoint):
    """The README's first steps over a library of symlinks, as many people keep one: files
    linked one by one, and a singer's whole folder linked, to two other disks. Indexed with
    `python -m indexer --index DIR LIBRARY`, served as `make run` serves (local writes, no
    SINGER_AUDIO_ROOTS)."""
    root = tmp_path_factory.mktemp("symlinked")
    library = root / "library"
    for v in range(len(VOICES)):
        disk = root / f"disk{v % 2}" / f"v{v}"
        takes = [make_clip(disk, v, "mixed", seed) for seed in (0, 1)]
        if v == len(VOICES) - 1:  # the whole singer folder is a link
            library.mkdir(exist_ok=True)
            (library / singer_name(v)).symlink_to(disk, target_is_directory=True)
            continue
        for take in takes:
            link = library / singer_name(v) / take.path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(take.path)
    cwd = root / "run"
    cwd.mkdir()
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    index = [sys.executable, "-m", "indexer", "--index", str(cwd / "data" / "index")]
    index += ["--checkpoint", str(random_checkpoint), str(library)]
    subprocess.run(index, cwd=cwd, env=env, check=True, capture_output=True)
    port = free_port()
    env |= {
        "SINGER_PORT": str(port),
        "SINGER_CHECKPOINT": str(random_checkpoint),
        "SINGER_DEVICE": "cpu",
        "SINGER_ALLOW_UNAUTHENTICATED_WRITES": "true",  # what `make run` sets
        "SINGER_LOG_LEVEL": "warning",
    }
    env.pop("SINGER_AUDIO_ROOTS", None)
    proc = ServiceProcess([sys.executable, "-m", "service"], env, port, cwd).start()
    try:
        yield proc, root
    finally:
        proc.kill()


def test_every_similar_track_of_a_symlinked_library_plays(browser, symlinked_service):
    service, root = symlinked_service
    browser.set_window_size(*DESKTOP)
    browser.get(service.url + "/")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#singers-table tbody tr"))
    query(browser, make_clip(root / "query", QUERY_VOICE, "mixed", 5).path, domain="mixed")
    assert ranked_singers(browser)[0] == singer_name(QUERY_VOICE)
    items = browser.find_elements(By.CSS_SELECTOR, "#track-list li[data-track-id]")
    assert len(items) == 2 * len(VOICES)  # every track of the library is similar to some degree
    assert not browser.find_elements(By.CSS_SELECTOR, "#track-list .unplayable")
    player = browser.find_element(By.ID, "player")
    for item in items:
        click(browser, item.find_element(By.CSS_SELECTOR, "button.play"))
        wait(browser).until(
            lambda d, item=item: d.execute_script(
                "return arguments[0].src.endsWith(`/tracks/${arguments[1]}/audio`) "
                "&& arguments[0].currentTime > 0",
                player,
                item.get_attribute("data-track-id"),
            )
        )
        assert browser.execute_script("return arguments[0].error", player) is None
