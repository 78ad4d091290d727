// The soak's fault vocabulary: every fault a schedule may draw (CHAOS_FAULTS picks from it).
import { all, consumers, linkFaults, processFaults, type Fault } from './faults.js'
import { databaseFaults } from './database-faults.js'
import { batchBurst, brokerFaults, dlqReplay, slowClients } from './server-faults.js'
import { eraseUser } from './erasure.js'
import { appProxy } from './app-proxy.js'

export const VOCABULARY: Fault[] = [
  ...linkFaults('broker', all),
  ...linkFaults('db', consumers),
  ...processFaults('consumer'),
  ...processFaults('producer'),
  ...databaseFaults,
  ...brokerFaults,
  slowClients,
  dlqReplay,
  batchBurst,
  eraseUser,
  appProxy,
]
