"""Browser tests: the admin UI and the screen-pop in headless Chromium, driven by Playwright."""
