"""HTML escaping of the audit report (``unmask audit --html``) and of the demo report: every string that can
come from a user (model name, texts, reasons, label and class names, calibration model names) is shown as
text, parsed back exactly, and never becomes markup."""
from html.parser import HTMLParser

import numpy as np

from unmask.attribution.record import Attribution
from unmask.audit import AuditReport
from unmask.audit.verdict import MethodVerdict
from unmask.report.audit_page import audit_html
from unmask.report.demo_page import write_demo_report

EVIL = {
    "model": '<script>alert("model")</script>',
    "summary": "<img src=x onerror=alert(1)> & 'quoted'",
    "reason": '</td></tr></table><script>alert("reason")</script>',
    "pileup": '"><svg onload=alert(2)>',
    "calibration": "<b>bold</b>",
    "method": "<i>my_method</i>",
    "note": "<iframe src=javascript:alert(3)>",
}
SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "div", "span", "p", "b", "br",
             "small", "table", "tr", "th", "td", "ul", "li", "code", "img"}


class Page(HTMLParser):
    """Tags, attributes and the text of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text += data


def assert_inert(html: str) -> Page:
    page = Page(html)
    assert set(page.tags) <= SAFE_TAGS, sorted(set(page.tags) - SAFE_TAGS)
    assert not [name for name, _ in page.attrs if name.startswith("on")]  # no event handler attributes
    assert all(not (v or "").lower().startswith("javascript:") for _, v in page.attrs)
    return page


def evil_report() -> AuditReport:
    method = {"top1_miss": 0.5, "pileup": 0.2, "pileup_class": EVIL["pileup"], "aopc_comprehensiveness": 0.1,
              "aopc_random": 0.05, "aopc_reference": 0.3}
    return AuditReport(
        model=EVIL["model"], verdict="suspect", score=2.5, p_value=0.003, summary=EVIL["summary"],
        methods={EVIL["method"]: MethodVerdict(EVIL["method"], "suspect", 0.003, [], [EVIL["reason"]]),
                 "leave_one_out": MethodVerdict("leave_one_out", "reference", 1.0)},
        evidence={"behavior": {"methods": {EVIL["method"]: method}, "magnitude_ratio": 0.5,
                               "first_order_miss": 0.1, "n_inputs": 7},
                  "structure": {"note": EVIL["note"]}},
        calibration={"models": ["clean-1", EVIL["calibration"]]}, seconds=3.0)


def test_audit_page_shows_every_string_as_text():
    page = assert_inert(audit_html(evil_report()))
    for key in ("model", "summary", "reason", "pileup", "calibration", "method", "note"):
        assert EVIL[key] in page.text, key  # parsed back exactly: escaped once, not dropped, not doubled
    assert "img" not in page.tags  # the summary's <img> is text


def test_demo_report_shows_every_string_as_text(tmp_path):
    tokens = ["[CLS]", "<script>", "&amp;", '"x"', "[SEP]"]
    record = Attribution(tokens=tokens, scores=np.array([0.1, 2.0, -1.0, 0.5, 0.0]), method="gradient_x_input",
                         target=0, target_name="<neg>", prediction=0, probabilities=[0.7, 0.3],
                         word_ids=[None, 0, 1, 2, None], sequence_ids=[None, 0, 0, 0, None],
                         words=(tokens[1:-1],), text='a <script>alert("text")</script> film')
    name = EVIL["model"]
    results = {"accuracy": {"f_orig": 80.0, "merged_stop": 79.0}, "agreement": {"stop": 99.0},
               "max_logit_diff": {"stop": 1e-6}, "saliency": {}}
    audits = {name: evil_report().to_dict()}
    path = write_demo_report(tmp_path / "report.html", results, audits,
                             {name: {"gradient_x_input": [record]}, "merged": {"gradient_x_input": [record]}})
    page = assert_inert(path.read_text(encoding="utf-8"))
    for text in (name, EVIL["summary"], EVIL["reason"], EVIL["pileup"], record.text, "<neg>"):
        assert text in page.text, text
    assert "".join(tokens[1:4]) in page.text.replace(" ", "")  # the tokens, as text
