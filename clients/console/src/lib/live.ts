// The console's one roomcast connection (the SDK), shared by the views.
import { Client } from '../../../js/src/index';
import { getToken } from './session';

let client: Client | null = null;

export function liveClient(): Client {
  if (!client) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Read at each (re)connect: the tab's current token (none on an open server).
    client = new Client({
      urls: [`${scheme}//${location.host}/ws`],
      ...(getToken() ? { token: () => getToken() ?? '' } : {}),
    });
  }
  return client;
}
