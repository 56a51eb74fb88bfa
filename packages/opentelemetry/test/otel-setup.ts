import { context, propagation, type Attributes } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  MeterProvider,
  MetricReader,
  type DataPoint,
  type Histogram,
} from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";

/** The SDK pieces a test needs: spans kept in memory, metrics read on demand. */
export function createOtel() {
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  return {
    exporter,
    tracerProvider,
    meterProvider,
    /** Every point of the metric `name` whose attributes include `match`. */
    async points(name: string, match: Attributes = {}): Promise<DataPoint<number | Histogram>[]> {
      const { resourceMetrics } = await reader.collect();
      const out: DataPoint<number | Histogram>[] = [];
      for (const sm of resourceMetrics.scopeMetrics) {
        for (const m of sm.metrics) {
          if (m.descriptor.name !== name) continue;
          for (const p of m.dataPoints as DataPoint<number | Histogram>[]) {
            if (Object.entries(match).every(([k, v]) => p.attributes[k] === v)) out.push(p);
          }
        }
      }
      return out;
    },
    async shutdown(): Promise<void> {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
    },
  };
}

/** The sum of a counter's points (or the count of a histogram's). */
export function total(points: DataPoint<number | Histogram>[]): number {
  return points.reduce((n, p) => n + (typeof p.value === "number" ? p.value : p.value.count), 0);
}

/** A metric reader that the test collects from itself. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** Registers the global context manager and W3C propagator; returns the undo. */
export function registerGlobals(): () => void {
  const manager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(manager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return () => {
    context.disable();
    propagation.disable();
  };
}
