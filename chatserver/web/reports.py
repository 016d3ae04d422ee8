"""Admin reports over HTTP (issue 12): the figures as JSON, as CSV and as server-drawn SVG."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import reports
from ..errors import NotFound, ValidationFailed
from ..storage.base import iso
from .common import app_state, require_staff

NO_STORE = {"Cache-Control": "no-store"}
DEFAULT_DAYS = 30


def _date(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw) if len(raw) == 10 else _bad(name)
    except ValueError:
        return _bad(name)


def _bad(name: str) -> date:
    raise ValidationFailed(f"{name} must be a date like 2026-12-31.", field=name)


async def _report(request: Request) -> dict[str, object]:
    await require_staff(request, "admin")
    today = datetime.now(UTC).date()
    last = _date(request, "to", today)
    first = _date(request, "from", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise ValidationFailed("from must not be after to.", field="from")
    if (last - first).days + 1 > reports.MAX_DAYS:
        raise ValidationFailed(f"A report covers at most {reports.MAX_DAYS} days.", field="to")
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    try:
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    except OverflowError:
        raise ValidationFailed("to is too far in the future.", field="to") from None
    rows = await app_state(request).store.report_rows(iso(start), iso(end))
    return reports.compute(rows, first, last)


async def report_json(request: Request) -> Response:
    return JSONResponse(await _report(request), headers=NO_STORE)


async def report_csv(request: Request) -> Response:
    report = await _report(request)
    name = f"report-{report['from']}-{report['to']}.csv"
    return Response(reports.to_csv(report), media_type="text/csv; charset=utf-8",
                    headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'})


async def report_chart(request: Request) -> Response:
    kind = request.path_params["kind"]
    if kind not in reports.CHARTS:
        await require_staff(request, "admin")
        raise NotFound("No such chart.")
    svg = reports.chart(await _report(request), kind)
    # An SVG drawn here, shown as an image: a strict policy in case it is opened on its own.
    return Response(svg, media_type="image/svg+xml",
                    headers={**NO_STORE, "Content-Security-Policy": "default-src 'none'; "
                             "style-src 'unsafe-inline'; sandbox"})


routes = [
    Route("/api/admin/reports", report_json, methods=["GET"]),
    Route("/api/admin/reports/csv", report_csv, methods=["GET"]),
    Route("/api/admin/reports/charts/{kind}", report_chart, methods=["GET"]),
]
