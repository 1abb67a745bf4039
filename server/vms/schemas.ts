// The VM shapes of the JSON API live in wire/vm.ts with the rest of the one VM model; this module
// only re-exports them for older import paths. `Vm` is the former name of `VmView`.
export { IdempotencyKey, RequestVmAnswer, VmList, VmRequest, VmStranger, VmView, VmView as Vm } from '../../wire/api.ts';
