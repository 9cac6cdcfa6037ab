"""The application runner: what an answered call does.

On answer it starts answering-machine detection when the spec asks for it (sync mode: the
answer fetch waits for the decision; async mode: the decision goes to its own webhook),
fetches the answer document (retries, then the fallback URL) and hands it to
the manager's ``app_runner``: :meth:`ApplicationRunner.run_xml` (the XML interpreter,
:mod:`softswitch.callcontrol`) when the server wires it, else the call is held. A transfer
cancels the running application and runs the document at a new URL instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sip import causes

from .model import (
    AppFailure,
    CallbackEvent,
    CallNotAnswered,
    CallNotFound,
    EndReason,
    HangupSource,
)

if TYPE_CHECKING:
    from .call import Call, CallManager

log = logging.getLogger("softswitch.call")

__all__ = ["ApplicationRunner", "CallAppHooks"]


class CallAppHooks:
    """What :class:`~softswitch.callcontrol.LiveCallControl` asks of the call it runs on
    (the typed hooks that replace callables pointing back into the manager)."""

    def __init__(self, runner: ApplicationRunner, call: Call) -> None:
        self._runner = runner
        self._call = call

    def base_params(self) -> dict[str, str]:
        return self._runner.xml_params(self._call)

    async def fetch(self, url: str, method: str, params: Mapping[str, str]) -> str:
        return await self._runner.fetch_xml(self._call, url, method, params)

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        self._runner.m.post_callback(self._call, "action", url, method, dict(params))

    async def hangup(self, cause: str, reason: str | None) -> None:
        await self._runner.app_hangup(self._call, cause, reason)


class ApplicationRunner:
    """Answer-time work of one :class:`CallManager`'s calls."""

    def __init__(self, manager: CallManager) -> None:
        self.m = manager

    # --- answering-machine detection ---------------------------------------------------------

    def start_machine_detection(self, call: Call) -> None:
        """Run the detector on the answered call's audio.

        Sync mode (no detection webhook): the answer fetch waits for the decision and
        carries it. Async mode: the answer fetch runs at once and the decision is posted to
        the webhook. Either way :attr:`AmdMode.HANGUP` ends a call answered by a machine
        (cause MACHINE_DETECTED), and every later callback carries the decision."""
        from .amd import MachineDetection

        amd = call.spec.amd
        assert amd is not None
        loop = asyncio.get_running_loop()
        call.amd = MachineDetection(
            call.leg, amd.params,
            on_decision=lambda result: self._machine_decided(call, result),
            on_beep=lambda result: self._beep_heard(call, result, loop),
        ).start()

    def _machine_decided(self, call: Call, result: Any) -> None:
        """The detector's decision, from the media clock's tick. What the answer fetch (sync
        mode) depends on is settled here, synchronously: the decision itself, and whether the
        call is ending (hangup mode), so :meth:`run_app` never races the callbacks and the BYE."""
        from .model import AmdMode, CallEnd

        call.machine = result
        amd = call.spec.amd
        if result.machine and amd is not None and amd.mode is AmdMode.HANGUP and call.local_end is None:
            call.local_end = CallEnd(causes.MACHINE_DETECTED, HangupSource.SYSTEM, EndReason.MACHINE_DETECTED)
        asyncio.get_running_loop().create_task(self._on_machine(call, result))

    def _amd_extra(self, call: Call, result: Any) -> dict[str, Any]:
        return {"machine_detection": call.dialect.machine_fields(call, result)}

    async def _on_machine(self, call: Call, result: Any) -> None:
        from .model import AmdMode

        amd = call.spec.amd
        assert amd is not None
        await self.m.update_record(call, extra=self._amd_extra(call, result))
        if amd.webhook is not None and not (result.machine and amd.waits_for_message_end):
            params = call.dialect.callback_params(call, CallbackEvent.MACHINE_DETECTION)
            self.m.post_callback(call, "machine_detection", amd.webhook.url, amd.webhook.method, params)
        if result.machine and amd.mode is AmdMode.HANGUP:
            if call.app_task is not None and not call.app_task.done() and amd.webhook is not None:
                call.app_task.cancel()
            await self.m.hangup(call, causes.MACHINE_DETECTED, HangupSource.SYSTEM, EndReason.MACHINE_DETECTED)

    def _beep_heard(self, call: Call, result: Any, loop: asyncio.AbstractEventLoop) -> None:
        """The detector's second result: the beep, or the end of a machine's greeting (which
        later callbacks carry, settled here before the sync answer fetch reads it)."""
        amd = call.spec.amd
        if amd is not None and amd.waits_for_message_end:
            call.machine = result
        loop.create_task(self._on_beep(call, result))

    async def _on_beep(self, call: Call, result: Any) -> None:
        await self.m.update_record(call, extra=self._amd_extra(call, result))
        amd = call.spec.amd
        if amd is not None and amd.webhook is not None and amd.waits_for_message_end:
            params = call.dialect.callback_params(call, CallbackEvent.MACHINE_DETECTION)
            self.m.post_callback(call, "machine_detection", amd.webhook.url, amd.webhook.method, params)

    async def _machine_decision(self, call: Call) -> None:
        """Sync mode: wait (at most the detection window) for the decision, and for a
        machine's end of greeting when the spec wants it (at most ``message_end_s``)."""
        amd = call.spec.amd
        if call.amd is None or amd is None or amd.webhook is not None:
            return
        try:
            result = await asyncio.wait_for(asyncio.shield(call.amd.decision), amd.window_s + 2)
            if result is not None and result.machine and amd.waits_for_message_end:
                await asyncio.wait_for(asyncio.shield(call.amd.beep), amd.message_end_s + 2)
        except TimeoutError:
            return

    # --- the answer document -----------------------------------------------------------------

    async def _fetch(self, call: Call, url: str, method: str, params: dict[str, str], event: str) -> Any:
        m = self.m
        result = await m.outbox.fetch(
            url, str(method), params, auth_token=call.account.auth_token, signature=call.dialect.signature,
            attempts=m.answer_url_attempts, deadline_s=m.answer_url_deadline_s,
            call_uuid=call.call_uuid, event=event,
        )
        m.observe("document_fetched", call, event, url, result)
        return result

    async def run_app(self, call: Call) -> None:
        """Fetch the answer URL (retries, then the fallback URL) and run or hold the call."""
        spec = call.spec
        await self._machine_decision(call)
        if call.local_end is not None or call.finished.is_set():
            return  # hung up while deciding (machine detection hangup, API, callee)
        params = call.dialect.callback_params(call, CallbackEvent.ANSWER)
        result = await self._fetch(call, spec.answer.url, spec.answer.method, dict(params), "answer")
        call.app_may_fallback = spec.fallback is not None
        failure = self._answer_failure(call, result, spec.answer.url)
        if failure is not None and spec.fallback is not None:
            log.warning("call %s: answer_url failed (%s: %s); trying fallback_url", call.call_uuid,
                        failure.kind, failure.detail)
            call.app_may_fallback = False  # fallback_url is used up
            call.app_failure = failure  # the dialect may report it in the fallback's parameters
            try:
                params = call.dialect.callback_params(call, CallbackEvent.ANSWER)
            finally:
                call.app_failure = None
            result = await self._fetch(call, spec.fallback.url, spec.fallback.method, dict(params), "fallback")
        if not getattr(result, "ok", False):
            log.warning("call %s: no call application could be fetched; hanging up", call.call_uuid)
            call.error = f"answer_url could not be fetched: {getattr(result, 'error', None) or 'failed'}"
            await self.m.hangup(call, causes.NORMAL_TEMPORARY_FAILURE, HangupSource.ERROR, EndReason.ANSWER_URL_ERROR)
            return
        await self._start_document(call, result, spec.answer.url)

    def _answer_failure(self, call: Call, result: Any, url: str) -> AppFailure | None:
        """Why the fetched answer document cannot run, or None. The document is parsed here
        (as the executor will) only when there is a fallback URL to go to instead."""
        from .app.document import XmlAppError

        if not getattr(result, "ok", False):
            status = getattr(result, "status", None)
            detail = str(getattr(result, "error", None) or f"HTTP {status}")
            kind = AppFailure.CONNECTION if status is None else AppFailure.HTTP_STATUS
            return AppFailure(kind, url, detail)
        if call.spec.fallback is None or self.m.app_runner is None:
            return None
        try:
            call.dialect.parse_document(result.body)
        except XmlAppError as exc:
            ctype = (getattr(result, "content_type", None) or "").lower()
            wrong_type = bool(ctype) and "xml" not in ctype and "html" not in ctype
            kind = AppFailure.CONTENT_TYPE if wrong_type else AppFailure.DOCUMENT
            return AppFailure(kind, url, str(exc))
        return None

    async def _start_document(self, call: Call, result: Any, default_url: str) -> None:
        """Record the fetched first document of an application and hand it to the runner."""
        body = result.body
        xml = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body or "")
        call.answer_xml = xml
        call.app_url = getattr(result, "url", None) or default_url
        await self.m.update_record(call, extra={"answer_xml": xml[:65536], "answer_fetch_url": call.app_url})
        if self.m.app_runner is None:
            log.info("call %s: answer XML fetched (%d bytes); no interpreter, holding the call:\n%s",
                     call.call_uuid, len(xml), xml[:2000])
            return
        await self.m.app_runner(call, xml)

    # --- the XML application -----------------------------------------------------------------

    async def run_xml(self, call: Call, xml: str) -> None:
        """The ``app_runner`` that executes the XML application on the call's media.

        The first document (``call.app_url``) is already fetched; the executor fetches the
        rest (actions, redirects, the fallback URL for an invalid answer document) through
        the signed webhook outbox. An application error hangs the call up with the error's
        cause (:mod:`softswitch.app.document`), stores the message in the record's ``error``,
        and the hangup callback follows as for any other end. A leg without media (a test
        double) is held, as without an interpreter.
        """
        from .callcontrol import LiveCallControl, run_xml_app

        if call.finished.is_set():
            return
        leg = call.leg
        if leg is None or getattr(leg, "media", None) is None:
            log.info("call %s: no media stream; holding the call", call.call_uuid)
            return
        m = self.m
        if call.control is None:
            call.control = LiveCallControl(
                leg,
                m.dialer,  # type: ignore[arg-type]
                hooks=CallAppHooks(self, call),
                data_dir=m.data_dir,
                dial_defaults=self._dial_defaults(call),
                conferences=m.conferences,
                account_id=call.account.auth_id,
            )
        spec = call.spec
        fallback = spec.fallback if call.app_may_fallback else None
        app = await run_xml_app(
            call.control,
            answer_url=call.app_url or spec.answer.url,
            xml=xml,
            fallback_url=fallback.url if fallback else None,
            fallback_method=fallback.method if fallback else "POST",
            data_dir=m.data_dir,
            recording_url_base=m.recording_url_base(call),
            recordings_dir=m.recording_dir(call.account.auth_id),
            recording_url=lambda name: m.recording_url(call, name),
            parse_document=call.dialect.parse_document,
        )
        if app.error is not None and not call.finished.is_set() and call.error is None:
            call.error = str(app.error)

    def _dial_defaults(self, call: Call) -> Any:
        from .callcontrol import DialDefaults

        def on_b_leg(b_leg: Any, to: str) -> None:
            call.b_legs.append(b_leg)
            del call.b_legs[:-8]  # bounded: only the newest B legs can be live
            self.m.observe("leg_started", call, b_leg)  # its SIP messages join the call's trace

        manager, account_id = self.m, call.account.auth_id
        return DialDefaults(
            on_b_leg=on_b_leg,
            sip_header_prefix="X-PH-",
            refuses=lambda target: manager.refuses_target(account_id, target),
        )

    def xml_params(self, call: Call) -> dict[str, str]:
        """Parameters the XML executor posts with every request (action, redirect...)."""
        return call.dialect.callback_params(call, CallbackEvent.APPLICATION)

    async def fetch_xml(self, call: Call, url: str, method: str, params: Mapping[str, str]) -> str:
        """The executor's fetcher: the signed outbox, with answer_url's retry policy."""
        from .app.control import FetchError

        fallback = call.spec.fallback
        event = "fallback" if fallback is not None and url == fallback.url else "action"
        result = await self._fetch(call, url, method, dict(params), event)
        if not getattr(result, "ok", False):
            raise FetchError(str(getattr(result, "error", None) or f"HTTP {getattr(result, 'status', None)}"))
        body = result.body
        return body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body or "")

    async def app_hangup(self, call: Call, cause: str, reason: str | None) -> None:
        """The executor ends the call: classify why, for the record and the hangup callback.

        ``reason`` is the executor's text: "End Of XML Instructions", "Hangup XML ...", or
        an :class:`~softswitch.app.document.XmlAppError` message.
        """
        from .app.document import CAUSE_FETCH_FAILED, CAUSE_INVALID_XML, CAUSE_NOT_IMPLEMENTED

        text = reason or ""
        key: EndReason | None
        if text == "End Of XML Instructions":
            source, key = HangupSource.SYSTEM, EndReason.END_OF_APPLICATION
        elif text.startswith("Hangup XML"):
            source, key = HangupSource.APPLICATION, None
        else:
            source = HangupSource.ERROR
            if cause in (CAUSE_INVALID_XML, CAUSE_NOT_IMPLEMENTED):
                key = EndReason.INVALID_DOCUMENT
            elif cause == CAUSE_FETCH_FAILED and text.startswith("fetching XML from"):
                spec = call.spec
                first = {spec.answer.url, spec.fallback.url if spec.fallback else None, call.app_url}
                hit = any(u and f" {u} " in text + " " for u in first)
                key = EndReason.ANSWER_URL_ERROR if hit else EndReason.ACTION_URL_ERROR
            else:
                key = None
            if call.error is None:
                call.error = text or cause
        await self.m.hangup(call, cause, source, key)

    # --- transfer ----------------------------------------------------------------------------

    async def transfer(self, call: Call, url: str, method: str = "POST", *, with_fallback: bool = False) -> None:
        """Run the XML at ``url`` on the A leg instead of its current application.

        The running application is cancelled first (what it plays stops; a ``<Dial>`` in
        progress hangs up its B leg), then ``url`` is fetched (signed, with retries) and
        run; if it cannot be fetched the call is hung up (EndReason.ACTION_URL_ERROR).
        ``with_fallback``: a ``url`` that cannot be fetched or run goes to the spec's
        fallback URL first, as the answer URL does. Returns once the new application task
        is started."""
        if call.answered_at is None:
            raise CallNotAnswered(f"call {call.call_uuid} is not answered yet")
        old = call.app_task
        if old is not None and not old.done():
            old.cancel()
            await asyncio.wait({old}, timeout=5.0)
        if call.finished.is_set() or call.local_end is not None:
            raise CallNotFound(f"call {call.call_uuid} has ended")
        call.app_task = asyncio.get_running_loop().create_task(
            self._run_transfer(call, url, method, with_fallback), name=f"app-{call.call_uuid}"
        )

    async def _run_transfer(self, call: Call, url: str, method: str, with_fallback: bool) -> None:
        result = await self._fetch(call, url, method, self.xml_params(call), "transfer")
        fallback = call.spec.fallback if with_fallback else None
        call.app_may_fallback = False
        if fallback is not None:
            failure = self._answer_failure(call, result, url)
            if failure is not None:
                log.warning("call %s: transfer URL failed (%s: %s); trying the fallback URL",
                            call.call_uuid, failure.kind, failure.detail)
                call.app_failure = failure  # the dialect may report it in the fallback's parameters
                try:
                    params = call.dialect.callback_params(call, CallbackEvent.ANSWER)
                finally:
                    call.app_failure = None
                url, method = fallback.url, fallback.method
                result = await self._fetch(call, url, method, dict(params), "fallback")
        if not getattr(result, "ok", False):
            call.error = f"transfer: fetching XML from {method} {url} failed: {getattr(result, 'error', None)}"
            await self.m.hangup(call, causes.NORMAL_TEMPORARY_FAILURE, HangupSource.ERROR, EndReason.ACTION_URL_ERROR)
            return
        await self._start_document(call, result, url)
