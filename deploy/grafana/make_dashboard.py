#!/usr/bin/env python3
"""Writes dashboards/llm-serving.json, the Grafana dashboard of llm-server's metrics.

The dashboard is generated so that every panel follows one pattern and the PromQL stays readable
here; tests/deploy/validate_deploy.py checks that each query names only metrics documented in
docs/METRICS.md. Run after changing a panel:  python3 deploy/grafana/make_dashboard.py
"""
import json
import pathlib

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"


def quantiles(metric, by=""):
    """p50/p95/p99 of a histogram, optionally split by labels."""
    group = f"le{', ' + by if by else ''}"
    legend_by = "".join(f" {{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{instance=~\"$instance\"}}[{RATE}])))",
         f"p{int(q * 100)}{legend_by}")
        for q in (0.5, 0.95, 0.99)
    ]


PANELS = [
    # (title, unit, [(expr, legend)], description)
    ("Time to first token", "s", quantiles("llm_time_to_first_token_seconds"),
     "Arrival to first token (Prefill reply, first Generate token)."),
    ("Inter-token latency", "s", quantiles("llm_inter_token_latency_seconds"),
     "Gap between consecutive tokens of a sequence (Generate stream, Decode calls)."),
    ("Tokens per second", "tps",
     [(f"sum(rate(llm_generation_tokens_total{{instance=~\"$instance\"}}[{RATE}]))", "generated"),
      (f"sum(rate(llm_prompt_tokens_total{{instance=~\"$instance\"}}[{RATE}]))", "prompt")],
     "Prompt tokens prefilled and tokens generated, per second."),
    ("Requests per second by RPC and code", "reqps",
     [(f"sum by (rpc, code) (rate(llm_requests_total{{instance=~\"$instance\"}}[{RATE}]))", "{{rpc}} {{code}}")],
     "Finished RPCs."),
    ("Error rate", "percentunit",
     [(f"sum(rate(llm_requests_total{{instance=~\"$instance\", code!~\"OK|NOT_FOUND|INVALID_ARGUMENT|CANCELLED\"}}[{RATE}]))"
       f" / clamp_min(sum(rate(llm_requests_total{{instance=~\"$instance\"}}[{RATE}])), 1e-9)", "server errors"),
      (f"sum by (reason) (rate(llm_request_rejections_total{{instance=~\"$instance\"}}[{RATE}]))", "rejected {{reason}} /s")],
     "Share of RPCs failing with server-side codes; rejections by reason."),
    ("Request latency p95 by RPC", "s", [quantiles("llm_request_duration_seconds", "rpc")[1]],
     "End-to-end RPC latency as the server saw it."),
    ("Queue depth (sequences by state)", "short",
     [(f"sum by (state) (llm_sequences{{instance=~\"$instance\"}})", "{{state}}")],
     "running: in the batch; waiting: queued for prefill (the HPA signal); idle: prefilled, awaiting Decode."),
    ("Queue time", "s", quantiles("llm_request_queue_time_seconds"),
     "Arrival at the engine to first scheduled step."),
    ("KV cache usage", "percentunit",
     [("llm_kv_cache_usage_ratio{instance=~\"$instance\"}", "{{instance}}")],
     "Used KV blocks over all KV blocks."),
    ("KV cache blocks", "short",
     [("sum by (state) (llm_kv_cache_blocks{instance=~\"$instance\"})", "{{state}}"),
      ("sum(llm_kv_cache_capacity_blocks{instance=~\"$instance\"})", "capacity")],
     "KV blocks used and free."),
    ("Prefix cache", "percentunit",
     [(f"sum(rate(llm_prefix_cache_hit_tokens_total{{instance=~\"$instance\"}}[{RATE}]))"
       f" / clamp_min(sum(rate(llm_prefix_cache_query_tokens_total{{instance=~\"$instance\"}}[{RATE}])), 1e-9)",
       "hit rate (prompt tokens)"),
      ("sum(llm_kv_cache_cached_blocks{instance=~\"$instance\"}) / sum(llm_kv_cache_capacity_blocks{instance=~\"$instance\"})",
       "cached blocks / capacity")],
     "Share of looked-up prompt tokens served from cached KV blocks, and the cached share of the pool."),
    ("Device memory", "bytes",
     [("sum(llm_device_memory_used_bytes{instance=~\"$instance\"})", "device used (all processes)"),
      ("sum(llm_device_memory_capacity_bytes{instance=~\"$instance\"})", "device capacity"),
      ("sum by (component) (llm_backend_memory_bytes{instance=~\"$instance\"})", "{{component}}")],
     "Device memory (0 on the CPU backend) and the backend's split: weights, KV pool, workspace."),
    ("Host resident memory", "bytes",
     [("llm_process_resident_memory_bytes{instance=~\"$instance\"}", "{{instance}}")],
     "Resident set of the server process."),
    ("Engine step time p95 by phase", "s", [quantiles("llm_engine_step_duration_seconds", "phase")[1]],
     "Wall time of one batch forward + sampling."),
    ("Batch size (mean per step)", "short",
     [(f"sum by (phase) (rate(llm_engine_step_batch_tokens_sum{{instance=~\"$instance\"}}[{RATE}]))"
       f" / sum by (phase) (rate(llm_engine_step_batch_tokens_count{{instance=~\"$instance\"}}[{RATE}]))", "tokens {{phase}}"),
      (f"sum by (phase) (rate(llm_engine_step_batch_sequences_sum{{instance=~\"$instance\"}}[{RATE}]))"
       f" / sum by (phase) (rate(llm_engine_step_batch_sequences_count{{instance=~\"$instance\"}}[{RATE}]))", "sequences {{phase}}")],
     "Query tokens and sequences per engine step."),
    ("Preemptions, expirations, evictions", "short",
     [(f"sum(rate(llm_sequence_preemptions_total{{instance=~\"$instance\"}}[{RATE}]))", "preempted /s"),
      (f"sum(rate(llm_kv_cache_evicted_blocks_total{{instance=~\"$instance\"}}[{RATE}]))", "blocks evicted /s"),
      (f"sum(rate(llm_sequence_expirations_total{{instance=~\"$instance\"}}[{RATE}]))", "expired /s")],
     "Requests that lost their KV blocks, prefix-cache evictions, idle sequences freed by the TTL."),
]


def panel(index, title, unit, queries, description):
    width, height = 12, 8
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": (index % 2) * width, "y": (index // 2) * height, "w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                     "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(queries)],
    }


def dashboard():
    return {
        "uid": "llm-serving",
        "title": "LLM serving",
        "tags": ["llm", "inference"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": "instance",
            "label": "Instance",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": "label_values(llm_model_info, instance)", "refId": "instance"},
            "definition": "label_values(llm_model_info, instance)",
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "refresh": 2,
        }]},
        "panels": [panel(i, *spec) for i, spec in enumerate(PANELS)],
    }


if __name__ == "__main__":
    out = pathlib.Path(__file__).resolve().parent / "dashboards" / "llm-serving.json"
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
