// activity-client: send user activity events to the tracker from Node.js 20+ or a browser.
export { ActivityClient, type ActivityClientOptions, type TrackInput } from './client.js'
export { ActivityClientError, type ActivityErrorCode, type ActivityEvent } from './errors.js'
export { checkEvent, type ValidationDetail } from './rules.js'
export { uuidv7 } from './uuid.js'
