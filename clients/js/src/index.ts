export { Client } from './client.js';
export type { ClientEvents, ClientOptions, ClientState, TokenSource } from './client.js';
export { Subscription } from './subscription.js';
export type { PublishOptions, SubscriptionEvents, SubscriptionHandlers, SubscriptionState } from './subscription.js';
export { RoomcastError } from './errors.js';
export { backoffDelay, randomKey } from './util.js';
export type { Encoding } from './util.js';
export type {
  Ack,
  HistoryOptions,
  HistoryResult,
  Json,
  Limits,
  LossReason,
  Message,
  Position,
  PresenceEntry,
  PresenceStats,
  ResetInfo,
  SubscribedInfo,
  Welcome,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
