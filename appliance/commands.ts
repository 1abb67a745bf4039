// Every command of the `skyhost` executable, in the order `skyhost --help` lists them. Each
// component owns its commands; this is the one place they are put together.
import type { Command } from '../base/cli.ts';
import { hostSetupCommand } from '../host/host-command.ts';
import { controllerCommand, upCommand } from '../server/commands.ts';
import { AGENT_COMMANDS } from '../agent/commands.ts';
import { usbListCommand, usbWriteCommand } from '../iso/usb-commands.ts';
import { setupCommand } from './setup/commands.ts';
import { isoBuildCommand } from '../iso/commands.ts';

export const COMMANDS: Command[] = [upCommand, controllerCommand, hostSetupCommand, usbListCommand, usbWriteCommand, isoBuildCommand, setupCommand, ...AGENT_COMMANDS];
