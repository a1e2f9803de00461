"""Take docs/monitor-web.png: `gendertool monitor --web` on the virtual device, in headless
Chromium (Debian's chromium + chromium-driver, as the browser tests use).

    python scripts/web_screenshot.py [OUT.png]

It starts `gendertool sim`, a monitor with the page, waits for some results, runs a short
bench from the page, and saves a full-page screenshot.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "monitor-web.png"
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        print("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
        return 1
    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "gendertool", "sim", "--listen", f"127.0.0.1:{port}", "--period-ms", "150"],
                           stderr=subprocess.DEVNULL)
    time.sleep(3)
    mon = subprocess.Popen([sys.executable, "-m", "gendertool", "monitor", "--port", f"socket://127.0.0.1:{port}", "--web",
                            "--web-input", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in mon.stderr:
            m = re.search(r"live page: (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "the monitor printed no URL"
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1320,1000",
                  "--hide-scrollbars"):
            opts.add_argument(a)
        d = webdriver.Chrome(service=Service(driver), options=opts)
        try:
            d.get(url)
            time.sleep(12)
            d.find_element("id", "bench").click()
            time.sleep(4)
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1320, height + 20)
            time.sleep(1)
            d.save_screenshot(str(out))
        finally:
            d.quit()
    finally:
        mon.send_signal(signal.SIGINT)
        mon.wait(20)
        sim.send_signal(signal.SIGINT)
        sim.wait(20)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
