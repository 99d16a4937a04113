# Ce que plusieurs vues partagent : la fenêtre, la barre d'outils, la connexion, les erreurs.

app-name-short = Relais
window-title = Relais
window-title-unread = { $count ->
    [one] Relais (1 non lu)
   *[other] Relais ({ $count } non lus)
}
starting = Ouverture de Relais…

page-conversation = Conversations
page-contact = Contact
page-devices = Mes appareils
page-group = Groupe
page-search = Rechercher
page-settings = Réglages
toolbar-shortcut = Raccourci : Ctrl+{ $key }
conversation-none-open = Choisissez une conversation dans la liste, ou commencez-en une nouvelle.

connection-connecting = Connexion au relais…
connection-connected = Connecté
connection-disconnected = Connexion perdue
connection-reconnecting = Nouvelle tentative dans { $seconds } s
connection-ended = Session terminée. Fermez puis rouvrez Relais.
connection-ended-revoked = Cet appareil a été révoqué. Demandez un nouveau lien d'inscription à votre administrateur.
connection-ended-account = Votre compte est suspendu ou a expiré. Contactez votre administrateur.
connection-ended-replaced = Cet appareil s'est connecté ailleurs. Fermez l'autre programme Relais, puis rouvrez celui-ci.

delivery-sent = envoyé
delivery-pending = en attente de connexion
delivery-failed = non envoyé

problem-dismiss = Fermer

error-wrong-passphrase = Phrase de passe incorrecte. Vérifiez-la (majuscules, accents) et réessayez.
error-home-in-use = Un autre programme Relais utilise déjà ce compte (processus { $pid }). Fermez-le, puis réessayez.
error-not-enrolled = Aucun appareil n'est inscrit ici. Inscrivez cet appareil avec le lien de votre administrateur.
error-session-ended = La session est terminée. Fermez puis rouvrez Relais.
error-relay-unreachable = Le relais est injoignable. Vérifiez votre connexion réseau, puis réessayez.
error-user-no-device = { $user } n'a encore aucun appareil inscrit. Demandez-lui d'en inscrire un, puis réessayez.
error-unverified = Non envoyé : { $user } a changé d'appareil depuis votre vérification. Comparez à nouveau vos numéros de sécurité.
error-request = La demande n'a pas abouti. Réessayez ; si cela persiste, signalez-le à votre administrateur.
error-protocol = Le relais a répondu de façon inattendue. Réessayez ; si cela persiste, signalez-le à votre administrateur.
error-local-storage = Les données de cet ordinateur sont inaccessibles. Vérifiez l'espace disque, puis rouvrez Relais.
error-enrollment-code = Ce lien d'inscription a déjà servi ou a expiré. Demandez-en un nouveau à votre administrateur.
error-device-revoked = Cet appareil a été révoqué. Demandez un nouveau lien d'inscription à votre administrateur.
error-account-closed = Votre compte est suspendu ou a expiré. Contactez votre administrateur.
error-unknown-user = Cet utilisateur est inconnu du relais. Vérifiez le nom (par exemple prenom.nom).
error-slow-down = Trop de messages à la fois. Patientez un peu, puis réessayez.
error-limit = Le relais refuse ce message : il dépasse une limite. Raccourcissez-le.
error-not-admin = Seul un administrateur du groupe peut faire cela.
error-replaced = Cet appareil s'est connecté ailleurs. Fermez l'autre programme Relais.
error-relay-failed = Le relais est momentanément indisponible. Réessayez dans quelques minutes.
error-relay-refused = Le relais a refusé la demande.
error-internal = Relais n'a pas pu démarrer correctement. Fermez-le et rouvrez-le.
error-busy = Relais est très occupé ; la dernière action n'a pas été prise en compte. Réessayez.
error-link-limit = Trop d'appareils, ou trop de liens en attente. Révoquez un ancien appareil, ou attendez qu'un lien expire.
error-linking-disabled = L'ajout d'appareils est désactivé sur ce relais. Demandez à votre administrateur.
error-tls-certificate = Le certificat du serveur n'est pas valable pour cette adresse, ou a expiré. Prévenez votre administrateur.

library-warning = Relais signale :

# Dates et heures, comme les montrent la liste, les fils et les appareils (nombres déjà complétés par des zéros).
time-of-day = { $hour }:{ $minute }
date-day = { $day }/{ $month }/{ $year }
date-and-time = { $date } { $time }
