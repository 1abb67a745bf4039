import { expect } from 'chai';
import { admitVm, type HostView } from '../../agent/admission.ts';
import { SkyError } from '../../base/errors.ts';
import { place, type SchedulerHost } from '../../server/scheduler/index.ts';
import { templateRuleFailed, TEMPLATE_RULES, VmCreateRequest, type Hypervisor, type TemplateAsk, type TemplateInfo } from '../../wire/api.ts';

const GiB = 1024 ** 3;

// Factories: a template, a VM request and an agent's view of its host, each test overriding what it is about.
function template(o: Partial<TemplateInfo> & { diskGiB?: number } = {}): TemplateInfo {
  const { diskGiB, ...rest } = o;
  return {
    name: 'alpine', kind: 'disk', os: 'alpine', minMemoryMiB: 128, console: 'serial', needsKvm: false,
    files: [{ role: 'disk', file: 'disk.qcow2', bytes: 50_000_000, sha256: 'a'.repeat(64), format: 'qcow2', virtualBytes: (diskGiB ?? 2) * GiB }],
    createdAt: '2025-01-01T00:00:00.000Z',
    ...rest,
  };
}
const request = (o: Partial<VmCreateRequest> = {}) => VmCreateRequest.parse({ name: 'vm-1', template: 'alpine', ...o });
const agentHost = (o: Partial<HostView> = {}): HostView =>
  ({ hypervisor: 'kvm', template: template(), ids: new Set<string>(), names: [], ...o });
const ask = (o: Partial<TemplateAsk> = {}): TemplateAsk =>
  ({ template: 'alpine', memoryMiB: 256, diskGiB: undefined, needsKvm: false, minMemoryMiB: 128, templateDiskGiB: 2, ...o });

/** The error admitVm throws, or undefined when it admits the request. */
function refusal(req: ReturnType<typeof request>, host: HostView): SkyError | undefined {
  try {
    admitVm(req, host);
    return undefined;
  } catch (e) {
    expect(e).to.be.instanceOf(SkyError);
    return e as SkyError;
  }
}

describe('placement rules (wire/placement.ts)', () => {
  describe('given the template rules', () => {
    const hostWith = (hypervisor: Hypervisor, templates = ['alpine']) => ({ hypervisor, templates: templates.map((name) => ({ name })) });

    it('should check in order: QEMU, KVM, the template, memory, disk, the size of an installer\'s empty disk', () => {
      expect(TEMPLATE_RULES.map((r) => r.reason)).to.deep.equal(['no_hypervisor', 'no_kvm', 'missing_template', 'memory_below_template', 'disk_below_template', 'disk_size_required']);
      // A host that fails several rules is refused for the first.
      expect(templateRuleFailed(ask({ needsKvm: true, memoryMiB: 1 }), hostWith('none', []))?.reason).to.equal('no_hypervisor');
      expect(templateRuleFailed(ask({ needsKvm: true, memoryMiB: 1 }), hostWith('tcg', []))?.reason).to.equal('no_kvm');
      expect(templateRuleFailed(ask({ memoryMiB: 1 }), hostWith('tcg', []))?.reason).to.equal('missing_template');
    });

    it('should let a template that does not need KVM run on TCG', () => {
      expect(templateRuleFailed(ask(), hostWith('tcg'))).to.equal(undefined);
      expect(templateRuleFailed(ask({ needsKvm: true }), hostWith('kvm'))).to.equal(undefined);
    });

    it('should hold memory at the template minimum: minimum - 1 refused, minimum and minimum + 1 admitted', () => {
      expect(templateRuleFailed(ask({ memoryMiB: 127 }), hostWith('kvm'))?.reason).to.equal('memory_below_template');
      expect(templateRuleFailed(ask({ memoryMiB: 128 }), hostWith('kvm'))).to.equal(undefined);
      expect(templateRuleFailed(ask({ memoryMiB: 129 }), hostWith('kvm'))).to.equal(undefined);
    });

    it('should hold the disk at the template image size, and take the image size when no disk is asked for', () => {
      expect(templateRuleFailed(ask({ diskGiB: 2, templateDiskGiB: 2.5 }), hostWith('kvm'))?.reason).to.equal('disk_below_template');
      expect(templateRuleFailed(ask({ diskGiB: 3, templateDiskGiB: 2.5 }), hostWith('kvm'))).to.equal(undefined);
      expect(templateRuleFailed(ask({ diskGiB: 2, templateDiskGiB: 2 }), hostWith('kvm'))).to.equal(undefined);
      expect(templateRuleFailed(ask({ diskGiB: undefined, templateDiskGiB: 40 }), hostWith('kvm'))).to.equal(undefined);
      expect(templateRuleFailed(ask({ diskGiB: 1, templateDiskGiB: undefined }), hostWith('kvm'))).to.equal(undefined);
    });

    it('should say why in a sentence that names the template', () => {
      for (const rule of TEMPLATE_RULES.slice(1)) expect(rule.message(ask({ templateDiskGiB: 2.5 })), rule.reason).to.contain('"alpine"');
      expect(TEMPLATE_RULES.find((r) => r.reason === 'disk_below_template')!.message(ask({ templateDiskGiB: 2.5 }))).to.contain('at least 3 GiB');
    });
  });

  describe('given an agent admitting a VM request (agent/admission.ts)', () => {
    // Table: what the host or the request gets wrong, and the status, code and field of the refusal.
    const cases: Array<[string, ReturnType<typeof request>, HostView, number, string, string?]> = [
      ['a host where QEMU does not run', request(), agentHost({ hypervisor: 'none' }), 503, 'no_hypervisor'],
      ['a KVM template on a TCG host', request(), agentHost({ hypervisor: 'tcg', template: template({ needsKvm: true }) }), 409, 'no_kvm'],
      ['a template the host does not have', request({ template: 'desktop' }), agentHost({ template: undefined }), 422, 'missing_template', 'template'],
      ['memory below the template minimum', request({ memoryMiB: 64 }), agentHost(), 422, 'memory_below_template', 'memoryMiB'],
      ['a disk smaller than the template image', request({ diskGiB: 1 }), agentHost({ template: template({ diskGiB: 2.5 }) }), 422, 'disk_below_template', 'diskGiB'],
      ['an installer ISO without a disk size', request(), agentHost({ template: template({ kind: 'iso', files: [] }) }), 422, 'disk_size_required', 'diskGiB'],
    ];
    for (const [what, req, h, status, code, field] of cases) {
      it(`should refuse ${what} with ${status} ${code}${field ? ` naming "${field}"` : ''}`, () => {
        const e = refusal(req, h);
        expect(e, 'refused').to.not.equal(undefined);
        expect(e!.status).to.equal(status);
        expect(e!.code).to.equal(code);
        if (field) {
          expect(e!.details).to.deep.equal({ fields: [{ field, message: e!.message.slice(field.length + 2) }] });
          expect(e!.message).to.match(new RegExp(`^${field}: `));
        }
      });
    }

    it('should say KVM and TCG when refusing a desktop on a TCG host', () => {
      const e = refusal(request({ template: 'desktop' }), agentHost({ hypervisor: 'tcg', template: template({ name: 'desktop', needsKvm: true }) }));
      expect(e!.message).to.equal('template "desktop" needs hardware acceleration (KVM), the host runs QEMU in software (TCG)');
    });

    it('should admit a request that fits, returning the template, and then look at names and ids', () => {
      expect(admitVm(request({ memoryMiB: 128, diskGiB: 2 }), agentHost()).name).to.equal('alpine');
      expect(admitVm(request({ diskGiB: 1 }), agentHost({ template: template({ kind: 'iso', files: [] }) })).kind).to.equal('iso');
      expect(refusal(request(), agentHost({ names: ['vm-1'] }))?.code).to.equal('conflict');
      expect(refusal(request({ id: 'abcdefgh1' }), agentHost({ ids: new Set(['abcdefgh1']) }))?.code).to.equal('conflict');
    });
  });

  describe('given the same host seen by the scheduler and by its agent', () => {
    // The scheduler's reason for leaving a host out is the agent's error code for the same request.
    const scenarios: Array<[string, Hypervisor, TemplateInfo | undefined]> = [
      ['QEMU does not run', 'none', template()],
      ['a KVM template on TCG', 'tcg', template({ needsKvm: true })],
      ['the template missing', 'kvm', undefined],
    ];
    for (const [what, hypervisor, t] of scenarios) {
      it(`should give one code for ${what}`, () => {
        const h: SchedulerHost = {
          id: 'h1', state: 'ready',
          status: {
            cpu: { threads: 8 }, memory: { totalMiB: 16384, freeMiB: 16000 }, disk: { totalGiB: 200, freeGiB: 150 },
            vms: { total: 0, vcpus: 0 }, hypervisor, templates: t ? [t] : [],
          },
        };
        const p = place({ template: 'alpine', vcpus: 1, memoryMiB: 256, diskGiB: 2, needsKvm: t?.needsKvm ?? true, minMemoryMiB: 128 }, [h]);
        const e = refusal(request(), agentHost({ hypervisor, template: t }));
        expect(p.rejected[0]?.reason).to.be.a('string').and.equal(e?.code);
      });
    }
  });
});
