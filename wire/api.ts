// The wire contract between the agent and the controller, and the controller's JSON API shapes: zod
// schemas and the types inferred from them. Both sides (and the simulated agent) import this one
// module; the definitions live by subject beside it. Change the agent's contract only by adding.
//
//   vm.ts        VmSpec and every VM shape that embeds it, the field limits, effectiveMemory()
//   template.ts  templates on a host, template imports
//   host.ts      an agent's /status, enrollment
//   pull.ts      pulling templates from the controller or peers: sources, progress
//   join.ts      the join string a new host is given: token, controller addresses, certificate fingerprint
export * from './vm.ts';
export * from './template.ts';
export * from './host.ts';
export * from './join.ts';
export * from './pull.ts';

// Placement rules and reason codes shared by the scheduler and the agent.
export * from './placement.ts';
