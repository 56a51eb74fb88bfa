export { createRunner, RunnerExitCode } from "./runner.ts";
export { runUntilSignalled } from "./signals.ts";
export { defineRunner, loadRunnerModule } from "./runner-module.ts";
export { STATUS_TOPIC, createServicesView, isStatusEvent } from "@nuropb/core";
export { watchServices } from "./watch-services.ts";

export type { Runner, RunnerExit, RunnerState } from "./runner.ts";
export type {
  RunnerOptions,
  RestartPolicy,
  ParticipantContext,
  ElectionContext,
  ServiceFactory,
  ClientFactory,
  ReadyContext,
} from "./options.ts";
export type { SignalOptions } from "./signals.ts";
export type {
  StatusEvent,
  ParticipantStatus,
  ServicesView,
  ServiceView,
  InstanceView,
  ServicesViewBuilder,
  ServicesWatch,
} from "@nuropb/core";
export type { WatchServicesOptions } from "./watch-services.ts";
export type { RunnerModule, RunnerModuleOptions, RunnerModuleContext } from "./runner-module.ts";
export { withLeaderWatch, ALERT_TOPIC } from "./leader-watch.ts";
export type {
  Backlog,
  BacklogProbe,
  AlertKind,
  ServiceAlertEvent,
  LeaderWatchOptions,
} from "./leader-watch.ts";
