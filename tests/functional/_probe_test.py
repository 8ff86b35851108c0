import time
from test_console_browser import *  # noqa
from test_console_browser import PASSWORD

def test_probe(page, base_url, household):
    t=time.perf_counter()
    def lap(m):
        nonlocal t
        n=time.perf_counter(); print(f"{m}: {n-t:.3f}"); t=n
    page.goto("/login"); lap("goto login")
    page.get_by_label("Email").fill(household.email); lap("fill")
    page.get_by_label("Password").fill(PASSWORD); lap("fill")
    page.get_by_role("button", name="Sign in").click(); lap("click")
    page.get_by_role("link", name=household.child_name).click(); lap("child")
    page.goto("/"); lap("home")
