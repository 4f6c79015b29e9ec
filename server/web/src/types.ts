import type { SessionInfo, Camera } from './api';

export interface View { el: HTMLElement; dispose?: () => void }
export interface Ctx { session: SessionInfo; cameras: Camera[]; params: URLSearchParams }

export function go(path: string): void { location.hash = `#${path}`; }
