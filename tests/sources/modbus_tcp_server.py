"""A real pymodbus Modbus TCP server on a loopback port, run in a thread with its own asyncio
loop, for the Modbus TCP source's tests: it can be stopped and started again on the same port
(the plant's PLC rebooting) without the test losing its address."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def unit(
    unit_id: int,
    holding: dict[int, int] | None = None,
    inputs: dict[int, int] | None = None,
    coils: dict[int, bool] | None = None,
    action: Any = None,
) -> SimDevice:
    """A unit with separate coils, discrete inputs, holding and input registers (each address
    given its raw 16-bit word or bit); an address not given is invalid: exception code 2."""

    def block(values: dict[int, Any], datatype: DataType) -> list[SimData]:
        if not values:  # pymodbus wants every block to hold something: the last address
            return [SimData(65535, values=[0], datatype=datatype)]
        return [SimData(a, values=[v], datatype=datatype) for a, v in sorted(values.items())]

    return SimDevice(
        id=unit_id,
        simdata=(
            block(coils or {}, DataType.BITS),
            block({}, DataType.BITS),
            block(holding or {}, DataType.REGISTERS),
            block(inputs or {}, DataType.REGISTERS),
        ),
        action=action,
    )


class TcpServer:
    def __init__(self, port: int, devices: Sequence[SimDevice]) -> None:
        self.port = port
        self.devices = list(devices)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        assert self._thread is None, "already running"
        ready = threading.Event()
        failed: list[BaseException] = []

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                self._server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port))
                await self._server.serve_forever(background=True)
            except BaseException as exc:  # reported to start()'s caller
                failed.append(exc)
                ready.set()
                return
            ready.set()
            await self._server.serving

        self._thread = threading.Thread(
            target=lambda: asyncio.run(serve()), name="modbus-tcp-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Modbus TCP server did not start")
        if failed:
            self._thread.join(5)
            self._thread = None
            raise failed[0]

    def stop(self) -> None:
        """Close the listener and every client connection, as a PLC that goes down does."""
        if self._thread is None:
            return
        assert self._loop is not None and self._server is not None
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._thread.join(10)
        assert not self._thread.is_alive()
        self._thread = None
