#!/usr/bin/env bash
# The test set-up for the browser test (tests/test_serve.py): Debian's headless Chromium and its
# ChromeDriver.  Installed with apt-get when missing and this runs as root; anywhere else it says
# why the browser test will be skipped and leaves the machine alone.  Never fails the test run.
#   BROWSER=0 make test      skips this step.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "tests: no apt-get here, so Chromium is not installed; the headless-browser test will be skipped"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "tests: not root, so Chromium is not installed (run: sudo apt-get install chromium chromium-driver);" \
         "the headless-browser test will be skipped"
    exit 0
fi
echo "tests: installing Debian's chromium and chromium-driver for the headless-browser test"
log=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver; } >"$log" 2>&1; then
    echo "tests: apt-get could not install chromium (last lines below); the headless-browser test will be skipped"
    tail -n 5 "$log"
fi
rm -f "$log"
exit 0
