import traceback
from typing import Any
from tests.tui_helpers import ClosingApp, FrozenClock, SEED_TS, wait_for, task_list
from textual._doc import take_svg_screenshot

class DebugApp(ClosingApp):
    def _handle_exception(self, error: Exception) -> None:
        traceback.print_exception(error)
        super()._handle_exception(error)

def test_x(server_factory: Any) -> None:
    server = server_factory(local_worker=False)
    app = DebugApp(server.client(), clock=FrozenClock(SEED_TS))
    async def rb(pilot):
        await pilot.pause(0.5)
    take_svg_screenshot(app=app, terminal_size=(80,24), run_before=rb)
