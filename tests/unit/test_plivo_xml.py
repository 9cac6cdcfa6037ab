"""Plivo XML parser: hardening, attributes, nesting, error messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.api.plivo.xml import (
    CAUSE_INVALID_XML,
    CAUSE_NOT_IMPLEMENTED,
    XmlAppError,
    parse_response,
)
from softswitch.app.verbs import (
    DTMF,
    MAX_LOOPS,
    Conference,
    Dial,
    GetDigits,
    GetInput,
    Hangup,
    Number,
    Play,
    PreAnswer,
    Record,
    Redirect,
    Speak,
    User,
    Wait,
)


def parse(body: str, **kw: object) -> tuple:
    return parse_response(f"<Response>{body}</Response>", **kw)  # type: ignore[arg-type]


def error(body: str, **kw: object) -> XmlAppError:
    with pytest.raises(XmlAppError) as info:
        parse(body, **kw)
    return info.value


# --- hardening ------------------------------------------------------------------------------


def test_billion_laughs_refused_before_parsing() -> None:
    doc = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<Response><Speak>&lol2;</Speak></Response>"
    )
    with pytest.raises(XmlAppError, match="DTD"):
        parse_response(doc)


def test_external_entity_refused() -> None:
    doc = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Response><Speak>&xxe;</Speak></Response>'
    with pytest.raises(XmlAppError, match="DTD"):
        parse_response(doc.encode())


def test_undefined_entity_is_a_parse_error() -> None:
    with pytest.raises(XmlAppError, match="not well-formed"):
        parse("<Speak>&nope;</Speak>")


def test_size_bound() -> None:
    body = "<Speak>hello</Speak>" * 100
    with pytest.raises(XmlAppError, match="more than the 1000 allowed"):
        parse(body, max_bytes=1000)
    assert len(parse(body)) == 100


def test_depth_bound() -> None:
    deep = "<Speak>" + "<s>" * 40 + "x" + "</s>" * 40 + "</Speak>"
    with pytest.raises(XmlAppError, match="nested deeper than 16"):
        parse(deep)


def test_not_xml() -> None:
    for doc in ("", "   ", "hello", "<Response>", "<Response><Speak>x</Response>", "{}"):
        with pytest.raises(XmlAppError):
            parse_response(doc)


def test_root_must_be_response() -> None:
    with pytest.raises(XmlAppError, match="root element must be <Response>, got <Speak>"):
        parse_response("<Speak>hi</Speak>")


def test_bytes_with_declared_encoding_and_bom() -> None:
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?><Response><Speak>café</Speak></Response>'
    assert parse_response(latin.encode("latin-1")) == (Speak(text="café"),)
    assert parse_response(b"\xef\xbb\xbf" + latin.replace("ISO-8859-1", "UTF-8").encode()) == (
        Speak(text="café"),
    )
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><Response><Speak>ok</Speak></Response>'
    assert parse_response(utf16.encode("utf-16")) == (Speak(text="ok"),)
    with pytest.raises(XmlAppError, match="not valid"):
        parse_response(b"<Response><Speak>\xff\xfe</Speak></Response>")


def test_empty_response_is_valid() -> None:
    assert parse_response("<Response/>") == ()
    assert parse_response('<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n</Response>\n') == ()


# --- verbs and defaults ---------------------------------------------------------------------


def test_speak_defaults_and_attributes() -> None:
    assert parse("<Speak>Hello  world</Speak>") == (Speak(text="Hello world"),)
    (s,) = parse('<Speak voice="man" language="en-GB" loop="3">Hi</Speak>')
    assert s == Speak(text="Hi", voice="MAN", language="en-GB", loop=3)
    (s,) = parse('<Speak loop="0">forever</Speak>')
    assert s.loop == MAX_LOOPS


def test_speak_ssml_flattened() -> None:
    (s,) = parse(
        '<Speak voice="Polly.Joanna">Hello <break time="1s"/><emphasis>big</emphasis> world</Speak>'
    )
    assert s.text == "Hello big world"
    assert s.voice == "Polly.Joanna"


def test_speak_errors() -> None:
    assert "must contain the text" in str(error("<Speak> </Speak>"))
    e = error('<Speak voice="robot">x</Speak>')
    assert (e.element, e.attribute) == ("Speak", "voice")
    assert "'WOMAN', 'MAN'" in str(e)
    e = error("<Speak><Play>http://a/b.mp3</Play></Speak>")
    assert "<Play>: cannot be nested inside <Speak>" in str(e)
    e = error('<Speak loop="-1">x</Speak>')
    assert e.attribute == "loop"


def test_play() -> None:
    assert parse("<Play>https://example.com/a.mp3</Play>") == (
        Play(url="https://example.com/a.mp3"),
    )
    assert parse('<Play loop="2">/var/sounds/a.wav</Play>') == (
        Play(url="/var/sounds/a.wav", loop=2),
    )
    assert parse("<Play>file:///tmp/a.wav</Play>")[0].url == "file:///tmp/a.wav"
    assert "must contain the URL" in str(error("<Play/>"))
    assert "http(s) URL" in str(error("<Play>ftp://x/a.mp3</Play>"))
    assert "http(s) URL" in str(error("<Play>relative/a.mp3</Play>"))


def test_wait() -> None:
    assert parse("<Wait/>") == (Wait(),)
    (w,) = parse('<Wait length="10" silence="true" minSilence="3000" beep="false"/>')
    assert w == Wait(length=10, silence=True, min_silence=3000, beep=False)
    e = error('<Wait length="0"/>')
    assert (e.element, e.attribute) == ("Wait", "length")
    assert "must be >= 1" in str(e)
    assert "must be 'true' or 'false'" in str(error('<Wait beep="yes"/>'))
    assert "must not contain text" in str(error("<Wait>5</Wait>"))


def test_get_digits_defaults() -> None:
    (g,) = parse('<GetDigits action="https://app/digits"><Speak>Press 1</Speak></GetDigits>')
    assert isinstance(g, GetDigits)
    assert (g.method, g.timeout, g.digit_timeout, g.finish_on_key) == ("POST", 5, 2, "#")
    assert (g.num_digits, g.retries, g.valid_digits, g.redirect) == (99, 1, "1234567890*#", True)
    assert g.play_beep is False and g.invalid_digits_sound is None
    assert g.children == (Speak(text="Press 1"),)


def test_get_digits_attributes() -> None:
    (g,) = parse(
        '<GetDigits action="http://app/a" method="get" timeout="10" digitTimeout="3" '
        'finishOnKey="none" numDigits="4" retries="3" validDigits="12" '
        'invalidDigitsSound="http://app/bad.wav" redirect="false" playBeep="true" log="false">'
        '<Play loop="2">http://app/menu.mp3</Play><Wait length="2"/></GetDigits>'
    )
    assert g.method == "GET" and g.finish_on_key == "" and g.num_digits == 4
    assert g.retries == 3 and g.valid_digits == "12" and g.redirect is False
    assert g.invalid_digits_sound == "http://app/bad.wav" and g.log is False
    assert g.children == (Play(url="http://app/menu.mp3", loop=2), Wait(length=2))


def test_get_digits_errors_name_element_and_attribute() -> None:
    e = error('<GetDigits numdigits="3"/>')
    assert (e.element, e.attribute) == ("GetDigits", "numdigits")
    assert "did you mean 'numDigits'" in str(e)
    e = error('<GetDigits numDigits="0"/>')
    assert str(e).startswith("<GetDigits> attribute 'numDigits': must be >= 1")
    assert error('<GetDigits numDigits="two"/>').attribute == "numDigits"
    assert error('<GetDigits finishOnKey="##"/>').attribute == "finishOnKey"
    assert error('<GetDigits method="PUT"/>').attribute == "method"
    assert error('<GetDigits action="/relative"/>').attribute == "action"
    assert error('<GetDigits validDigits="1x"/>').attribute == "validDigits"
    assert "<Record>: cannot be nested inside <GetDigits>" in str(
        error("<GetDigits><Record/></GetDigits>")
    )


def test_get_input() -> None:
    (g,) = parse(
        '<GetInput action="https://app/in" inputType="dtmf speech" digitEndTimeout="auto" '
        'executionTimeout="20" numDigits="4" hints="yes,no" language="en-US"><Speak>Say</Speak></GetInput>'
    )
    assert isinstance(g, GetInput)
    assert g.input_type == "dtmf speech" and g.digit_end_timeout is None
    assert g.execution_timeout == 20 and g.num_digits == 4
    e = error('<GetInput action="https://app/in" inputType="speech"/>')
    assert e.attribute == "inputType" and "speech recognition is not supported" in str(e)
    assert error('<GetInput inputType="dtmf"/>').attribute == "action"
    assert (
        error('<GetInput action="https://app/in" executionTimeout="61"/>').attribute
        == "executionTimeout"
    )


def test_dtmf() -> None:
    assert parse("<DTMF>12w3W#@300</DTMF>") == (DTMF(digits="12w3W#@300"),)
    assert parse('<DTMF async="false">9</DTMF>') == (DTMF(digits="9", async_=False),)
    assert "invalid character 'x' at position 3" in str(error("<DTMF>12x</DTMF>"))
    assert "out of range" in str(error("<DTMF>1@3</DTMF>"))
    assert error('<Dial><Number sendDigits="1@2@3">1</Number></Dial>').attribute == "sendDigits"


def test_hangup() -> None:
    assert parse("<Hangup/>") == (Hangup(),)
    assert parse('<Hangup reason="busy"/>') == (Hangup(reason="busy"),)
    assert parse('<Hangup reason="rejected" schedule="30"/>') == (
        Hangup(reason="rejected", schedule=30),
    )
    e = error('<Hangup reason="angry"/>')
    assert e.attribute == "reason" and "'rejected' or 'busy'" in str(e)


def test_redirect() -> None:
    assert parse("<Redirect> https://app/next </Redirect>") == (Redirect(url="https://app/next"),)
    assert parse('<Redirect method="GET">http://app/n</Redirect>')[0].method == "GET"
    assert "must contain the URL" in str(error("<Redirect/>"))
    assert "http(s) URL" in str(error("<Redirect>next.xml</Redirect>"))


def test_record() -> None:
    (r,) = parse('<Record action="https://app/rec"/>')
    assert r == Record(action="https://app/rec")
    assert (r.file_format, r.max_length, r.timeout, r.finish_on_key, r.play_beep) == (
        "mp3",
        60,
        15,
        "#",
        True,
    )
    (r,) = parse(
        '<Record fileFormat="wav" maxLength="5" timeout="2" finishOnKey="*#" playBeep="false" '
        'callbackUrl="http://app/cb" callbackMethod="GET" redirect="false" transcriptionType="auto"/>'
    )
    assert (r.file_format, r.max_length, r.finish_on_key, r.callback_method) == (
        "wav",
        5,
        "*#",
        "GET",
    )
    assert error('<Record fileFormat="ogg"/>').attribute == "fileFormat"
    e = error('<Record recordSession="true"/>')
    assert e.cause == CAUSE_NOT_IMPLEMENTED and e.attribute == "recordSession"


def test_dial() -> None:
    (d,) = parse(
        '<Dial action="https://app/dial" timeout="20" timeLimit="600" callerId="+15550001" '
        'callerName="Support" hangupOnStar="true" callbackUrl="https://app/cb" digitsMatch="*9,#1" '
        'sipHeaders="a=1,b=2">'
        '<Number sendDigits="ww12">+14155550100</Number><User>sip:alice@example.com</User></Dial>'
    )
    assert isinstance(d, Dial)
    assert d.numbers == (
        Number(number="+14155550100", send_digits="ww12"),
        User(uri="sip:alice@example.com"),
    )
    assert (d.timeout, d.time_limit, d.caller_id, d.caller_name) == (
        20,
        600,
        "+15550001",
        "Support",
    )
    assert d.digits_match == ("*9", "#1") and d.sip_headers == (("a", "1"), ("b", "2"))
    assert d.hangup_on_star is True and d.redirect is True
    (d,) = parse("<Dial><Number>100</Number></Dial>")
    assert (d.timeout, d.time_limit, d.action) == (30, 14_400, None)


def test_dial_errors() -> None:
    assert "at least one <Number> or <User>" in str(error("<Dial/>"))
    assert "phone number" in str(error("<Dial><Number>call me</Number></Dial>"))
    assert "SIP URI" in str(error("<Dial><User>alice</User></Dial>"))
    assert "<Speak>: cannot be nested inside <Dial>" in str(error("<Dial><Speak>x</Speak></Dial>"))
    assert (
        error('<Dial callerName="' + "x" * 51 + '"><Number>1</Number></Dial>').attribute
        == "callerName"
    )
    assert error('<Dial sipHeaders="a b=1"><Number>1</Number></Dial>').attribute == "sipHeaders"


def test_number_outside_dial() -> None:
    e = error("<Number>+1555</Number>")
    assert e.element == "Number" and "must be nested inside <Dial>" in str(e)


def test_pre_answer() -> None:
    (p,) = parse("<PreAnswer><Speak>early</Speak><Wait/></PreAnswer>")
    assert p == PreAnswer(children=(Speak(text="early"), Wait()))
    assert "<Dial>: cannot be nested inside <PreAnswer>" in str(
        error("<PreAnswer><Dial><Number>1</Number></Dial></PreAnswer>")
    )


def test_unknown_and_unsupported_elements() -> None:
    e = error("<Say>hi</Say>")
    assert e.element == "Say" and "unknown element" in str(e) and e.cause == CAUSE_INVALID_XML
    assert "unknown element" in str(error("<speak>hi</speak>"))
    e = error("<MultiPartyCall>room</MultiPartyCall>")
    assert e.cause == CAUSE_NOT_IMPLEMENTED and "does not support" in str(e)
    assert error("<Stream>wss://x</Stream>").cause == CAUSE_NOT_IMPLEMENTED


def test_stray_text_and_response_attributes() -> None:
    assert "must not contain text" in str(error("hello<Speak>x</Speak>"))
    with pytest.raises(XmlAppError, match="takes no attributes"):
        parse_response('<Response a="1"/>')


def test_legacy_attributes_only_in_legacy_mode() -> None:
    body = (
        '<Speak engine="flite" voice="slt">hi</Speak>'
        '<Record filePath="/tmp" fileName="x" maxLength="5"/>'
        '<Dial><Number gateways="sofia/gateway/a/,sofia/gateway/b" gatewayRetries="1">123</Number></Dial>'
    )
    assert error(body).attribute == "engine"
    speak, record, dial = parse(body, legacy=True)
    assert speak.voice == "slt"
    assert record.finish_on_key == "1234567890*#"  # the framework's default
    assert dial.numbers[0].gateways == ("sofia/gateway/a", "sofia/gateway/b")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_only_raises_xml_app_error(doc: str) -> None:
    try:
        parse_response(doc)
    except XmlAppError:
        pass


_TAGS = st.sampled_from(
    ["Response", "Speak", "Play", "Wait", "GetDigits", "Dial", "Number", "s", "Foo"]
)
_ATTRS = st.dictionaries(
    st.sampled_from(["loop", "length", "numDigits", "action", "voice", "timeout", "x"]),
    st.sampled_from(["1", "0", "-1", "abc", "http://a/b", "WOMAN", ""]),
    max_size=3,
)


@st.composite
def _element(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(_TAGS)
    attrs = "".join(f' {k}="{v}"' for k, v in draw(_ATTRS).items())
    kids = draw(st.lists(_element(depth + 1), max_size=3)) if depth < 3 else []
    text = draw(st.sampled_from(["", "hi", "http://a/b.mp3", "+1555"]))
    return f"<{tag}{attrs}>{text}{''.join(kids)}</{tag}>"


@settings(max_examples=150, deadline=None)
@given(_element())
def test_fuzz_structured(doc: str) -> None:
    try:
        verbs = parse_response(doc)
    except XmlAppError as exc:
        assert str(exc)
    else:
        assert isinstance(verbs, tuple)


def test_conference_attributes() -> None:
    (c,) = parse(
        '<Conference muted="true" enterSound="beep:1" exitSound="beep:2"'
        ' startConferenceOnEnter="false" endConferenceOnExit="true" stayAlone="false"'
        ' waitSound="http://h/wait.mp3" maxMembers="5" timeLimit="60" hangupOnStar="true"'
        ' record="true" recordFileFormat="wav" callbackUrl="http://h/cb" digitsMatch="12,*9"'
        ' floorEvent="true" relayDTMF="false" action="http://h/a" redirect="false">'
        " room 1 </Conference>"
    )
    assert isinstance(c, Conference)
    assert (c.name, c.muted, c.enter_sound, c.exit_sound) == ("room 1", True, "beep:1", "beep:2")
    assert not c.start_on_enter and c.end_on_exit and not c.stay_alone
    assert (c.wait_sound, c.max_members, c.time_limit) == ("http://h/wait.mp3", 5, 60)
    assert c.hangup_on_star and c.record and c.record_file_format == "wav"
    assert c.digits_match == ("12", "*9") and c.floor_event and not c.relay_dtmf
    assert "floor" in c.status_events and not c.redirect
    (d,) = parse("<Conference>r</Conference>")
    assert d.time_limit == 86_400 and d.relay_dtmf and d.stay_alone and d.start_on_enter
    assert "floor" not in d.status_events
    assert "maxMembers" in str(error('<Conference maxMembers="0">r</Conference>'))
    assert "recordFileFormat" in str(error('<Conference recordFileFormat="ogg">r</Conference>'))
    assert "must contain a room name" in str(error("<Conference/>"))
    assert "enterSound" in str(error('<Conference enterSound="beep:3">r</Conference>'))
    # the framework's RESTXML: recordFilePath starts a recording, no time limit by default
    (legacy,) = parse('<Conference recordFilePath="/tmp/">r</Conference>', legacy=True)
    assert legacy.record and legacy.time_limit == 0
    assert "recordFilePath" in str(error('<Conference recordFilePath="/tmp/">r</Conference>'))
    # recordFileName names the file (and records); a path is refused
    (named,) = parse('<Conference recordFileName="minutes-1">r</Conference>', legacy=True)
    assert named.record and named.record_file_name == "minutes-1"
    bad = '<Conference recordFileName="../x">r</Conference>'
    with pytest.raises(XmlAppError, match="recordFileName"):
        parse(bad, legacy=True)
    # Plivo: recordWhenAlone (default false); sound URLs are documents
    assert not d.record_when_alone and d.sounds_are_documents
    (alone,) = parse('<Conference record="true" recordWhenAlone="true">r</Conference>')
    assert alone.record_when_alone


def test_conference_callback_names() -> None:
    from softswitch.api.plivo.xml import conference_params
    from softswitch.app.verbs import ConferenceEvent

    ev = ConferenceEvent("digits", "r", "u-1", "3", "call-1", digits="12")
    assert conference_params(ev) == {
        "ConferenceName": "r",
        "ConferenceUUID": "u-1",
        "ConferenceMemberID": "3",
        "ConferenceAction": "digits",
        "ConferenceDigitsMatch": "12",
    }
    assert conference_params(ConferenceEvent("speaking", "r", "u", "1", "c")) is None
    result = conference_params(ConferenceEvent("result", "r", "u", "1", "c", record_url="http://x"))
    assert result is not None and "ConferenceAction" not in result and result["RecordUrl"]
