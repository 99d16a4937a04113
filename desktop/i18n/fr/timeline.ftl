# Le fil d'une conversation.

timeline-new = Écrivez votre premier message ci-dessous.
timeline-loading = Chargement…
timeline-loading-older = Chargement des messages précédents…
timeline-empty = Aucun message dans cette conversation.
timeline-older-limit = Les messages plus anciens ne sont pas affichés ici : utilisez la recherche pour les retrouver.
timeline-event-prefix = Relais :
timeline-you = Vous
