// Public entry of the Kubernetes API test server.
export type {
  FailureRule,
  KubeApiServer,
  KubeApiServerOptions,
  KubeHooks,
  RequestLogEntry,
} from './server.ts';
export { startKubeApiServer } from './server.ts';
