// The JSON API: every component registers its routes and their OpenAPI operations (its routes.ts);
// `GET /api/openapi.json` is the document of what was registered. Handlers only translate HTTP to
// the services and back; the rules live in the services.
import { classRoutes } from '../classes/routes.ts';
import { consoleRoutes } from '../console/routes.ts';
import { eventRoutes } from '../events/routes.ts';
import { hostRoutes } from '../hosts/routes.ts';
import type { ControllerServices } from '../services.ts';
import { distributeRoutes } from '../templates/distribute.ts';
import { templateRoutes } from '../templates/routes.ts';
import { userRoutes } from '../users/routes.ts';
import { bootRoutes } from '../vms/boot-routes.ts';
import { policyRoutes } from '../vms/policy-routes.ts';
import { vmRoutes } from '../vms/routes.ts';
import { docsRoutes } from './docs.ts';
import { ApiRouter } from './route.ts';

export function apiRoutes(services: ControllerServices): ApiRouter {
  const api = new ApiRouter({ hostOfAgentKey: (key) => services.hosts.byAgentKey(key) });
  userRoutes(api, services);
  classRoutes(api, services);
  hostRoutes(api, services);
  policyRoutes(api, services); // before vmRoutes: its /api/vms/:id/:action would take /extend
  vmRoutes(api, services);
  bootRoutes(api, services);
  consoleRoutes(api, services);
  templateRoutes(api, services);
  distributeRoutes(api, services.distribute);
  eventRoutes(api, services);
  docsRoutes(api);
  api.route({ method: 'get', path: '/api/openapi.json', summary: 'This document', auth: 'none', responses: { 200: 'the OpenAPI 3.1 document' } }, (_req, res) => {
    res.json(api.document());
  });
  return api;
}
