// The LAN browser for controllers lives in wire/ (the agent and `skyhost vm` both browse).
export { browseControllers, type ControllerBrowser } from '../../wire/mdns-browse.ts';
